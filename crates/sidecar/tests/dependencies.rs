//! The crates' dependencies point one way: proto and model at the bottom, the areas (cache,
//! routing) above the model, the sidecar composing them, the tools on top, and the filter beside
//! them on proto alone. Cargo refuses cycles; this test also refuses a new edge that would bend
//! the direction (the cache reaching into routing, the model into the cache), so that a change
//! of layout is a decision, made here.

use std::collections::BTreeMap;
use std::path::Path;

/// Each crate and the Vane crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("filter", &["vane-proto"]),
    ("model", &[]),
    ("cache", &["vane-model"]),
    ("routing", &["vane-model", "vane-proto"]),
    ("sidecar", &["vane-cache", "vane-model", "vane-proto", "vane-routing"]),
    ("tools", &["vane-cache", "vane-model", "vane-routing", "vane-sidecar"]),
    // What the fuzz tests share; only ever a dev-dependency.
    ("fuzz", &[]),
];

/// The `vane-*` names under `[dependencies]` of a Cargo.toml.
fn vane_dependencies(manifest: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]"
            && let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| n.starts_with("vane-"))
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn dependencies_point_one_way() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(crates).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            found.insert(entry.file_name().to_string_lossy().into_owned(), vane_dependencies(&text));
        }
    }
    let allowed: BTreeMap<String, Vec<String>> = ALLOWED.iter().map(|(c, deps)| (c.to_string(), deps.iter().map(|d| d.to_string()).collect())).collect();
    assert_eq!(found, allowed, "a crate was added or its dependencies changed: update ALLOWED (and the README's layout) if the direction still holds");
}

#[test]
fn the_reader_sees_only_normal_dependencies() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nvane-model.workspace = true\nvane-proto = { workspace = true }\nserde = \"1\"\n[dev-dependencies]\nvane-cache.workspace = true\n";
    assert_eq!(vane_dependencies(manifest), ["vane-model", "vane-proto"]);
}
