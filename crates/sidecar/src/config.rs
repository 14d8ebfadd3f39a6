//! The sidecar's configuration (`config/vane.yaml`), composed of the areas' sections: `server`
//! (here), `model` ([`vane_model::config`]), `routing` and `safety` ([`vane_routing::config`]),
//! `cache` ([`vane_cache::config`]), `tracing` ([`crate::telemetry::config`]). Each section checks itself; this module checks what spans
//! sections.
//!
//! Parsed strictly (unknown fields are errors, with their path). [`Config::load`] then checks
//! everything at once before anything starts: every section, every file the config names (the
//! encoder, its tokenizer, the heads, read here), and every cross-reference (categories against
//! head labels, cache and jailbreak categories against routing's, models against routes), and
//! reports every problem with the path of the field at fault. Relative file paths are resolved
//! against the directory of the config file.
//!
//! A file may start from another one beside it (`extends: vane.yaml`) and say only what differs:
//! the compose demo and the Kubernetes overlays keep one routing policy and change addresses and
//! backends ([`read_layers`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;
use vane_cache::config::{Backend, CacheConfig, MIN_BYTES, MilvusConfig, bytes};
use vane_model::config::ModelConfig;
use vane_routing::Heads;
use vane_routing::config::{RoutingConfig, SafetyConfig};

use crate::telemetry::config::TracingConfig;
use crate::tickets::TicketKey;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `source` is printed after it by `{:#}` (anyhow's chain).
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Hash of the configuration that shapes cached answers ([`cache_epoch`]), and under
    /// [`Config::load`] of the files it names: part of every cache key, so a changed encoder,
    /// head, routing or safety policy never serves older answers.
    #[serde(skip)]
    pub cache_epoch: String,
    /// The heads the configuration names, read by [`Config::load`] (none after [`Config::parse`]).
    #[serde(skip)]
    pub heads: Heads,
    /// The YAML as written, its `extends` chain applied: what [`restart_fields`] compares.
    #[serde(skip)]
    pub written: serde_yaml_ng::Value,
    /// Digests of the encoder's files (`model.onnx`, `model.tokenizer`), read by [`Config::load`].
    #[serde(skip)]
    pub encoder_digests: Vec<[u8; 32]>,
    /// The key of `cache.tickets.key_file`, read by [`Config::load`].
    #[serde(skip)]
    pub ticket_key: Option<TicketKey>,
    #[serde(default)]
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub routing: RoutingConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC address the filter calls (`vane.v1.Sidecar`).
    pub grpc: SocketAddr,
    /// Admin HTTP: /metrics, /healthz, /readyz.
    pub admin: SocketAddr,
    /// Most bytes of prompt + context one Route may carry; larger ones are refused with
    /// OUT_OF_RANGE (the filter fails open). Twice the filter's default `max_body_bytes` (1 MiB),
    /// so any body the filter accepts by default fits, however its JSON was escaped.
    #[serde(deserialize_with = "bytes")]
    pub max_route_bytes: usize,
    /// Most bytes of response one Store may carry; larger ones are not stored (`too_large`).
    /// The filter's default `max_response_bytes`: it never sends more.
    #[serde(deserialize_with = "bytes")]
    pub max_store_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { grpc: ([127, 0, 0, 1], 50051).into(), admin: ([127, 0, 0, 1], 9190).into(), max_route_bytes: 2 << 20, max_store_bytes: 4 << 20 }
    }
}

impl ServerConfig {
    /// The gRPC decoding limit: the larger of a Route and a Store (its answer and its ticket,
    /// whose prompt is at most `max_ticket_bytes`) plus room for the other fields, so that an
    /// oversized prompt or answer is refused by our own check, with a clear message and reason.
    pub fn max_message_bytes(&self, max_ticket_bytes: usize) -> usize {
        self.max_route_bytes.max(self.max_store_bytes.saturating_add(max_ticket_bytes)).saturating_add(64 << 10)
    }
}

/// Hash of the parts of a configuration that change what a cached answer would be: the encoder
/// (model file, tokenizer, window), routing, safety and the cache's per-category rules. Comments,
/// formatting, ports and performance knobs (threads, batching, device, cache sizes) are left out.
/// `files` are the contents' digests of what the config names ([`Config::load`]): a model
/// re-exported at the same path is another encoder.
pub fn cache_epoch(text: &str, files: &[[u8; 32]]) -> String {
    use serde_yaml_ng::Value;
    const MODEL_KEYS: [&str; 6] = ["encoder", "onnx", "tokenizer", "max_tokens", "prefix", "languages"];
    let doc: Value = serde_yaml_ng::from_str(text).unwrap_or(Value::Null);
    let mut relevant = serde_yaml_ng::Mapping::new();
    if let Some(model) = doc.get("model").and_then(Value::as_mapping) {
        let kept: serde_yaml_ng::Mapping = model.iter().filter(|(k, _)| k.as_str().is_some_and(|k| MODEL_KEYS.contains(&k))).map(|(k, v)| (k.clone(), v.clone())).collect();
        relevant.insert("model".into(), Value::Mapping(kept));
    }
    for key in ["routing", "safety"] {
        relevant.insert(key.into(), doc.get(key).cloned().unwrap_or(Value::Null));
    }
    relevant.insert("cache.categories".into(), doc.get("cache").and_then(|c| c.get("categories")).cloned().unwrap_or(Value::Null));
    let canonical = serde_yaml_ng::to_string(&relevant).unwrap_or_default();
    let mut hasher = sha2::Sha256::new();
    hasher.update(canonical.as_bytes());
    for digest in files {
        hasher.update(digest);
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The fields a running sidecar takes from a reloaded configuration ([`crate::reload`]), as
/// path prefixes: the routing and safety policies (their heads re-read) and the cache's policy
/// (thresholds, per-category and per-language rules, which answers are stored). Everything else
/// is read once, at start.
pub const LIVE_FIELDS: [&str; 8] = ["routing", "safety", "cache.threshold", "cache.similarity_threshold", "cache.max_unknown_share", "cache.categories", "cache.languages", "cache.store"];

/// What differs between two loaded configurations outside [`LIVE_FIELDS`], by field path
/// (`server.grpc`, `model.threads`, `cache.backend`, ...): the changes only a restart applies.
/// Fields are compared as written, so one newly set to its default value counts as a change.
/// `model` is named too when the encoder's files changed contents at the same paths.
pub fn restart_fields(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    changed_fields("", &old.written, &new.written, &mut changed);
    changed.retain(|field| !LIVE_FIELDS.iter().any(|live| field == live || field.starts_with(&format!("{live}."))));
    if old.encoder_digests != new.encoder_digests {
        changed.push("model (the encoder files' contents)".into());
    }
    changed
}

/// The paths where `old` and `new` differ: maps compared key by key, anything else whole.
fn changed_fields(path: &str, old: &serde_yaml_ng::Value, new: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    use serde_yaml_ng::{Mapping, Value};
    // A section one side leaves out compares as an empty one, so its fields are named.
    fn map<'a>(v: &'a Value, other: &Value, empty: &'a Mapping) -> Option<&'a Mapping> {
        v.as_mapping().or_else(|| (v.is_null() && other.is_mapping()).then_some(empty))
    }
    let empty = Mapping::new();
    let (Some(a), Some(b)) = (map(old, new, &empty), map(new, old, &empty)) else {
        if old != new {
            out.push(if path.is_empty() { "config".into() } else { path.into() });
        }
        return;
    };
    let mut keys: Vec<&Value> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
    keys.sort_by_cached_key(|k| k.as_str().map(str::to_owned));
    for key in keys {
        let name = key.as_str().map_or_else(|| format!("{key:?}"), str::to_owned);
        let field = if path.is_empty() { name } else { format!("{path}.{name}") };
        changed_fields(&field, a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), out);
    }
}

fn digest(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// The most files one `extends` chain may hold (a longer one is a cycle, or a mistake).
const MAX_LAYERS: usize = 8;

/// The YAML text of the config file at `path`, with its `extends` chain applied: `extends:
/// base.yaml` names a file in the same directory (so relative paths mean the same in both), and
/// this file is merged over it: maps key by key, recursively; anything else (a list, a scalar)
/// replaces the base's value; `null` removes the key. A file without `extends` is returned as it is.
pub fn read_layers(path: &Path) -> Result<String, ConfigError> {
    use serde_yaml_ng::Value;
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source });
    let parse = |path: &Path, text: &str| {
        serde_yaml_ng::from_str::<Value>(text).map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })
    };
    let text = read(path)?;
    let mut layer = parse(path, &text)?;
    if layer.get("extends").is_none() {
        return Ok(text);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut layers = Vec::new();
    let mut seen = vec![path.to_path_buf()];
    while let Some(base) = layer.as_mapping_mut().and_then(|m| m.remove("extends")) {
        let invalid = |message: String| ConfigError::Invalid(vec![format!("extends: {message} (in {})", seen.last().map_or(path, |p| p).display())]);
        let name = base.as_str().ok_or_else(|| invalid("must be a file name".into()))?;
        if name.is_empty() || Path::new(name).components().count() != 1 || name.contains(['/', '\\']) {
            return Err(invalid(format!("'{name}' must name a file in the same directory")));
        }
        let next = dir.join(name);
        if seen.contains(&next) || seen.len() == MAX_LAYERS {
            return Err(invalid(format!("'{name}' makes a cycle or a chain longer than {MAX_LAYERS} files")));
        }
        layers.push(layer);
        layer = parse(&next, &read(&next)?)?;
        seen.push(next);
    }
    let merged = layers.into_iter().rev().fold(layer, merge);
    serde_yaml_ng::to_string(&merged).map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })
}

/// `over` merged over `base` ([`read_layers`]' rules).
fn merge(base: serde_yaml_ng::Value, over: serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value;
    match (base, over) {
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (key, value) in over {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    let merged = match base.remove(&key) {
                        Some(old) => merge(old, value),
                        None => value,
                    };
                    base.insert(key, merged);
                }
            }
            Value::Mapping(base)
        }
        (_, over) => over,
    }
}

impl Config {
    /// Reads the file and checks everything ([`Config::parse`], then every file it names and
    /// every cross-reference), reporting all problems at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_layers(path)?;
        Config::from_yaml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// [`Config::load`] for YAML text whose relative paths are taken from `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let (mut config, mut errors) = Config::read(text, base)?;
        let files = config.read_files(&mut errors);
        config.cache_epoch = cache_epoch(text, &files);
        config.encoder_digests = files.iter().take(2).copied().collect();
        if errors.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(errors)) }
    }

    /// Reads the file and checks each section, without reading the files it names (the
    /// offline tools: the heads may be the ones being retrained).
    pub fn load_sections(path: &Path) -> Result<Config, ConfigError> {
        let text = read_layers(path)?;
        Config::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses YAML text and checks each section; relative paths are taken from `base`. Files
    /// are not read (tests, and tools that need only some sections).
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let (config, errors) = Config::read(text, base)?;
        if errors.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(errors)) }
    }

    fn read(text: &str, base: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // "." is the top level; an unknown key "" there has the empty path (found by fuzzing).
            ConfigError::Parse { path: if path == "." || path.is_empty() { "config".into() } else { path }, message: e.into_inner().to_string() }
        })?;
        let mut errors = Vec::new();
        config.server.check(&mut errors);
        config.model.check(&mut errors);
        config.routing.check(&mut errors);
        config.safety.check(&mut errors);
        config.cache.check(&mut errors);
        config.tracing.check(&mut errors);
        config.check_backend_knobs(&mut errors);
        config.check_models(&mut errors);
        config.cache_epoch = cache_epoch(text, &[]);
        config.written = serde_yaml_ng::from_str(text).unwrap_or_default();
        config.model.resolve(base);
        config.routing.resolve(base);
        config.safety.resolve(base);
        config.cache.resolve(base);
        Ok((config, errors))
    }

    /// Reads the encoder files (their digests go into the cache epoch) and the heads, then
    /// checks what refers to head labels.
    fn read_files(&mut self, errors: &mut Vec<String>) -> Vec<[u8; 32]> {
        let mut files = Vec::new();
        for (field, path) in [("model.onnx", &self.model.onnx), ("model.tokenizer", &self.model.tokenizer)] {
            match digest(path) {
                Ok(d) => files.push(d),
                Err(e) => errors.push(format!("{field}: cannot read {}: {e} (run `make models`)", path.display())),
            }
        }
        if let Some(p) = &self.model.onnxruntime
            && !p.is_file()
        {
            errors.push(format!("model.onnxruntime: {} is not a file", p.display()));
        }
        if let Some(path) = &self.cache.tickets.key_file {
            match std::fs::read(path) {
                Ok(bytes) => match TicketKey::new(bytes.trim_ascii_end().to_vec()) {
                    Some(key) => self.ticket_key = Some(key),
                    None => errors.push(format!("cache.tickets.key_file: {} holds {} bytes; a key needs at least {}", path.display(), bytes.trim_ascii_end().len(), TicketKey::MIN_BYTES)),
                },
                Err(e) => errors.push(format!("cache.tickets.key_file: cannot read {}: {e}", path.display())),
            }
        }
        self.heads = Heads::load(&self.routing, &self.safety, &self.model.encoder, errors);
        let heads = [self.routing.head.as_ref(), self.routing.cost_aware.as_ref().map(|c| &c.head), self.safety.jailbreak.as_ref().map(|j| &j.head)];
        files.extend(heads.into_iter().flatten().filter_map(|p| digest(p).ok()));
        let categories = self.heads.categories(&self.routing);
        let mut known = |field: &str, names: &mut dyn Iterator<Item = &String>| {
            for name in names.filter(|n| !categories.contains(*n)) {
                errors.push(format!("{field}.{name}: '{name}' is not a routing category (configured, a label of routing.head, or 'default')"));
            }
        };
        known("cache.categories", &mut self.cache.categories.keys());
        if let Some(j) = &self.safety.jailbreak {
            known("safety.jailbreak.categories", &mut j.categories.keys());
        }
        files
    }

    /// Knobs the chosen cache backend does not use are mistakes, not silently ignored.
    fn check_backend_knobs(&self, errors: &mut Vec<String>) {
        let c = &self.cache;
        let defaults = CacheConfig::default();
        match c.backend {
            Backend::Milvus => {
                let unused = [
                    ("snapshot", c.snapshot.is_some()),
                    ("snapshot_interval_seconds", c.snapshot_interval_seconds != defaults.snapshot_interval_seconds),
                    ("max_entries", c.max_entries != defaults.max_entries),
                    ("max_bytes", c.max_bytes != defaults.max_bytes),
                    ("eviction", c.eviction != defaults.eviction),
                ];
                for (knob, _) in unused.iter().filter(|(_, set)| *set) {
                    errors.push(format!("cache.{knob}: has no effect with cache.backend: milvus (Milvus keeps each entry until its ttl_seconds); remove it"));
                }
            }
            Backend::Memory => {
                if c.milvus != MilvusConfig::default() {
                    errors.push("cache.milvus: has no effect with cache.backend: memory; set backend: milvus or remove it".into());
                }
            }
        }
    }

    /// When `routing.models` lists the models, every model a route can choose must be in it: a
    /// misspelt one would send traffic nowhere.
    fn check_models(&self, errors: &mut Vec<String>) {
        let r = &self.routing;
        if r.models.is_empty() {
            return;
        }
        let mut routes: Vec<(String, &str)> = vec![("routing.default_model".into(), r.default_model.as_str())];
        for (i, c) in r.categories.iter().enumerate() {
            routes.extend(c.model.iter().map(|m| (format!("routing.categories[{i}].model"), m.as_str())));
            routes.extend(c.model_scores.iter().enumerate().map(|(j, s)| (format!("routing.categories[{i}].model_scores[{j}].model"), s.model.as_str())));
        }
        if let Some(c) = &r.cost_aware {
            routes.extend([("routing.cost_aware.small_model".into(), c.small_model.as_str()), ("routing.cost_aware.large_model".into(), c.large_model.as_str())]);
        }
        for (field, model) in routes.into_iter().filter(|(_, m)| !m.is_empty() && !r.models.contains_key(*m)) {
            errors.push(format!("{field}: '{model}' is not in routing.models ({:?})", r.models.keys().collect::<Vec<_>>()));
        }
    }
}

impl ServerConfig {
    /// Every problem with this section, each as `server.<field>: <why>`.
    fn check(&self, errors: &mut Vec<String>) {
        for (field, value) in [("max_route_bytes", self.max_route_bytes), ("max_store_bytes", self.max_store_bytes)] {
            if value < MIN_BYTES {
                errors.push(format!("server.{field}: must be at least {MIN_BYTES}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vane_cache::config::Consistency;
    use vane_routing::config::Oversize;

    const GOOD: &str = r#"
model: { onnx: m.onnx, tokenizer: t.json }
routing:
  default_model: general
  categories:
    - { name: math, model: math-model, examples: ["solve x"] }
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/vane")).unwrap_err().to_string()
    }

    #[test]
    fn the_cache_epoch_follows_what_shapes_answers_only() {
        let epoch = |text: &str| Config::parse(text, Path::new("/etc/vane")).unwrap().cache_epoch;
        let base = epoch(GOOD);
        assert_eq!(base.len(), 16);
        let same = [
            GOOD.replace("model: { onnx: m.onnx, tokenizer: t.json }", "# a comment\nmodel: { onnx: m.onnx, tokenizer: t.json, threads: 4, max_batch: 8 }"),
            format!("{GOOD}server: {{ grpc: 127.0.0.1:1, admin: 127.0.0.1:2 }}\ncache: {{ ttl_seconds: 5, max_entries: 9, threshold: 0.95 }}\n"),
        ];
        for text in same {
            assert_eq!(epoch(&text), base, "{text}");
        }
        let changed = [
            GOOD.replace("m.onnx", "fp32.onnx"),
            GOOD.replace("math-model", "big-model"),
            format!("{GOOD}safety: {{ pii: {{ action: block }} }}\n"),
            format!("{GOOD}cache: {{ categories: {{ math: {{ enabled: false }} }} }}\n"),
        ];
        for text in changed {
            assert_ne!(epoch(&text), base, "{text}");
        }
    }

    #[test]
    fn cache_category_thresholds_are_checked() {
        assert!(err(&format!("{GOOD}cache: {{ categories: {{ math: {{ threshold: 1.5 }} }} }}\n")).contains("cache.categories.math.threshold"));
        assert!(err(&format!("{GOOD}cache: {{ categories: {{ math: {{ thresold: 0.9 }} }} }}\n")).contains("thresold"));
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(GOOD, Path::new("/etc/vane")).unwrap();
        assert_eq!(c.model.onnx, PathBuf::from("/etc/vane/m.onnx"));
        assert_eq!(c.routing.aliases, vec!["auto"]);
        assert!(c.cache.enabled);
        assert_eq!(c.server.grpc.port(), 50051);
        assert_eq!(c.routing.head, None);
        assert_eq!((c.cache.eviction, &c.cache.snapshot), (vane_cache::eviction::Policy::Lru, &None));
        let c = Config::parse(&format!("{GOOD}cache: {{ eviction: lfu, snapshot: state/cache.snap }}"), Path::new("/etc/vane")).unwrap();
        assert_eq!((c.cache.eviction, c.cache.snapshot), (vane_cache::eviction::Policy::Lfu, Some(PathBuf::from("/etc/vane/state/cache.snap"))));
        let c = Config::parse(&GOOD.replace("routing:\n", "routing:\n  head: heads/h.json\n"), Path::new("/etc/vane")).unwrap();
        assert_eq!(c.routing.head, Some(PathBuf::from("/etc/vane/heads/h.json")));
    }

    #[test]
    fn unknown_and_mistyped_fields_name_their_path() {
        assert!(err(&GOOD.replace("default_model", "default_modle")).contains("routing"));
        let e = err(&format!("{GOOD}cache: {{ threshold: high }}"));
        assert!(e.starts_with("cache.threshold"), "{e}");
        let e = err(&format!("{GOOD}cache: {{ ttl: 5 }}"));
        assert!(e.contains("cache") && e.contains("ttl"), "{e}");
        let e = err(&format!("{GOOD}cache: {{ eviction: random }}"));
        assert!(e.starts_with("cache.eviction") && e.contains("lru"), "{e}");
        let e = err(&GOOD.replace("examples: [\"solve x\"]", "examples: 3"));
        assert!(e.starts_with("routing.categories[0].examples"), "{e}");
    }

    #[test]
    fn validation_reports_every_error_with_its_path() {
        let text = GOOD.replace("default_model: general", "default_model: ''").replace("examples: [\"solve x\"]", "examples: []")
            + "cache: { threshold: 1.5 }\n";
        let e = err(&text);
        for needle in ["routing.default_model", "routing.categories[0].examples", "cache.threshold"] {
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn the_jailbreak_budget_has_defaults_and_is_checked() {
        let c = Config::parse(&format!("{GOOD}safety: {{ jailbreak: {{ head: h.json, threshold: 0.85 }} }}\n"), Path::new("/")).unwrap();
        let j = c.safety.jailbreak.unwrap();
        assert_eq!((j.max_windows, j.deadline_ms, j.oversize), (64, 120, Oversize::Block));
        let c = Config::parse(&format!("{GOOD}safety: {{ jailbreak: {{ head: h.json, threshold: 0.85, max_windows: 200, deadline_ms: 900, oversize: allow }} }}\n"), Path::new("/")).unwrap();
        let j = c.safety.jailbreak.unwrap();
        assert_eq!((j.max_windows, j.deadline_ms, j.oversize), (200, 900, Oversize::Allow));
        let e = err(&format!("{GOOD}safety: {{ jailbreak: {{ head: h.json, threshold: 1.5, max_windows: 0, deadline_ms: 0 }} }}\n"));
        for needle in ["safety.jailbreak.threshold", "safety.jailbreak.max_windows", "safety.jailbreak.deadline_ms"] {
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
        let e = err(&format!("{GOOD}safety: {{ jailbreak: {{ head: h.json, threshold: 0.85, oversize: sometimes }} }}\n"));
        assert!(e.starts_with("safety.jailbreak.oversize") && e.contains("block"), "{e}");
    }

    #[test]
    fn milvus_backend_settings_are_parsed_and_checked() {
        let c = Config::parse(&format!("{GOOD}cache: {{ backend: milvus, milvus: {{ address: 'http://m:19530', consistency: session }} }}\n"), Path::new("/")).unwrap();
        assert_eq!((c.cache.backend, c.cache.milvus.consistency), (Backend::Milvus, Consistency::Session));
        assert_eq!((c.cache.milvus.address.as_str(), c.cache.milvus.collection.as_str()), ("http://m:19530", "vane_cache"));
        assert_eq!(Config::parse(GOOD, Path::new("/")).unwrap().cache.backend, Backend::Memory);
        let e = err(&format!("{GOOD}cache: {{ backend: redis }}\n"));
        assert!(e.starts_with("cache.backend"), "{e}");
        let e = err(&format!("{GOOD}cache: {{ backend: milvus, milvus: {{ address: 'm:19530', collection: 'a-b', top_k: 10, ef: 5 }} }}\n"));
        for needle in ["cache.milvus.address", "cache.milvus.collection", "cache.milvus.ef"] {
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn byte_bounds_take_units_and_are_checked() {
        let c = Config::parse(GOOD, Path::new("/")).unwrap();
        assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes, c.cache.tickets.ttl_seconds), (256 << 20, 1 << 20, 600));
        assert_eq!((c.server.max_route_bytes, c.server.max_store_bytes), (2 << 20, 4 << 20));
        let text = format!("{GOOD}server: {{ max_route_bytes: 64KiB, max_store_bytes: 70000 }}\ncache: {{ max_bytes: '1 GiB', max_entry_bytes: 2MiB, tickets: {{ ttl_seconds: 60, key_file: k.bin }} }}\n");
        let c = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!((c.server.max_route_bytes, c.server.max_store_bytes), (64 << 10, 70_000));
        assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes), (1 << 30, 2 << 20));
        assert_eq!((c.cache.tickets.ttl_seconds, c.cache.tickets.key_file.as_deref()), (60, Some(Path::new("/k.bin"))));
        assert_eq!(c.server.max_message_bytes(1 << 20), 70_000 + (1 << 20) + (64 << 10), "a Store: the answer and the ticket");
        let e = err(&format!("{GOOD}cache: {{ max_bytes: 12 MB }}\n"));
        assert!(e.starts_with("cache.max_bytes") && e.contains("KiB, MiB or GiB"), "{e}");
        let e = err(&format!("{GOOD}server: {{ max_route_bytes: 100 }}\ncache: {{ max_bytes: 5KiB, max_entry_bytes: 8KiB, tickets: {{ ttl_seconds: 0 }} }}\n"));
        for needle in ["server.max_route_bytes", "cache.max_bytes: must be at least cache.max_entry_bytes", "cache.tickets.ttl_seconds"] {
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
        assert!(err(&format!("{GOOD}cache: {{ tickets: {{ max: 5 }} }}\n")).contains("max"));
        assert!(err(&format!("{GOOD}cache: {{ max_bytes: 99999999999999GiB }}\n")).starts_with("cache.max_bytes"), "overflow");
    }

    /// A directory with an encoder, a tokenizer and heads, for the checks that read files.
    fn with_files(name: &str) -> PathBuf {
        use vane_model::head::{Head, Kind, Meta, Params};
        let dir = std::env::temp_dir().join(format!("vane-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.onnx"), b"an encoder").unwrap();
        std::fs::write(dir.join("t.json"), b"a tokenizer").unwrap();
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Head::new(labels(&["math", "law", "other"]), Params::zeros(Kind::Softmax, 4, 0, 3), Meta::default()).save(&dir.join("topics.json")).unwrap();
        Head::new(labels(&["0", "1"]), Params::zeros(Kind::Softmax, 4, 0, 2), Meta::default()).save(&dir.join("jb.json")).unwrap();
        Head::new(labels(&["0", "1"]), Params::zeros(Kind::Softmax, 8, 0, 2), Meta::default()).save(&dir.join("wide.json")).unwrap();
        dir
    }

    const WITH_HEADS: &str = r#"
model: { onnx: m.onnx, tokenizer: t.json }
routing:
  default_model: general
  head: topics.json
  categories:
    - { name: math, model: math-model }
safety: { jailbreak: { head: jb.json, threshold: 0.8 } }
"#;

    #[test]
    fn loading_reads_the_files_and_checks_every_reference_at_once() {
        let dir = with_files("refs");
        let c = Config::from_yaml(WITH_HEADS, &dir).unwrap();
        assert_eq!(c.heads.routing.as_ref().map(|h| h.labels().len()), Some(3));
        assert!(c.heads.jailbreak.is_some() && c.heads.cost_aware.is_none());
        assert!(Config::parse(WITH_HEADS, &dir).unwrap().heads.routing.is_none(), "parse reads no file");
        let broken = WITH_HEADS.replace("m.onnx", "missing.onnx").replace("{ name: math, model: math-model }", "{ name: physics, model: math-model }").replace("threshold: 0.8 }", "threshold: 0.8, positive_label: bad, categories: { poetry: { action: off } } }")
            + "cache: { categories: { cooking: { enabled: false } }, threshold: 2 }\n";
        let e = Config::from_yaml(&broken, &dir).unwrap_err().to_string();
        for needle in [
            "cache.threshold: must be in (0, 1]",
            "model.onnx: cannot read",
            "routing.categories[0]: 'physics' has no examples and is not a label of routing.head",
            "safety.jailbreak.positive_label: 'bad' is not a label",
            "cache.categories.cooking: 'cooking' is not a routing category",
            "safety.jailbreak.categories.poetry: 'poetry' is not a routing category",
        ] {
            assert!(e.contains(needle), "{e}\nshould say: {needle}");
        }
        std::fs::write(dir.join("short.key"), b"too short\n").unwrap();
        std::fs::write(dir.join("good.key"), [7u8; 32]).unwrap();
        let keyed = |file: &str| Config::from_yaml(&format!("{WITH_HEADS}cache: {{ tickets: {{ key_file: {file} }} }}\n"), &dir);
        assert!(keyed("good.key").unwrap().ticket_key.is_some());
        assert!(keyed("short.key").unwrap_err().to_string().contains("cache.tickets.key_file: ") && keyed("short.key").unwrap_err().to_string().contains("holds 9 bytes; a key needs at least 32"));
        assert!(keyed("missing.key").unwrap_err().to_string().contains("cache.tickets.key_file: cannot read"));
        let e = Config::from_yaml(&WITH_HEADS.replace("jb.json", "wide.json"), &dir).unwrap_err().to_string();
        assert!(e.contains("safety.jailbreak.head: the head takes 8 dimensions, routing.head 4"), "{e}");
    }

    #[test]
    fn a_file_extends_its_neighbour_and_says_only_what_differs() {
        let dir = with_files("extends");
        std::fs::write(dir.join("base.yaml"), WITH_HEADS).unwrap();
        let over = "extends: base.yaml\nserver: { grpc: 0.0.0.0:50051 }\ncache: { backend: milvus, milvus: { address: http://milvus:19530 } }\nsafety: null\n";
        std::fs::write(dir.join("over.yaml"), over).unwrap();
        let c = Config::load(&dir.join("over.yaml")).unwrap();
        assert_eq!(c.server.grpc.to_string(), "0.0.0.0:50051");
        assert_eq!(c.server.admin, ServerConfig::default().admin, "the base's and the defaults stay");
        assert_eq!((c.cache.backend, c.cache.milvus.address.as_str()), (Backend::Milvus, "http://milvus:19530"));
        assert_eq!(c.routing.categories.len(), 1, "routing comes from the base");
        assert!(c.safety.jailbreak.is_none(), "null removes the base's section");
        assert_eq!(c.model.onnx, dir.join("m.onnx"), "paths are relative to the one directory");
        let base = Config::load(&dir.join("base.yaml")).unwrap();
        assert_ne!(c.cache_epoch, base.cache_epoch, "dropping the jailbreak policy changes answers");

        let fails = |name: &str, text: &str, needle: &str| {
            std::fs::write(dir.join(name), text).unwrap();
            let e = format!("{:#}", anyhow::Error::from(Config::load(&dir.join(name)).unwrap_err()));
            assert!(e.contains(needle), "{e}\nshould say: {needle}");
        };
        fails("up.yaml", "extends: ../base.yaml\n", "extends: '../base.yaml' must name a file in the same directory");
        fails("loop.yaml", "extends: loop.yaml\n", "'loop.yaml' makes a cycle");
        fails("gone.yaml", "extends: missing.yaml\n", "cannot read");
        fails("typo.yaml", "extends: base.yaml\nserver: { grcp: 0.0.0.0:1 }\n", "server: unknown field `grcp`");
    }

    #[test]
    fn the_cache_epoch_follows_the_files_contents_not_only_their_paths() {
        let dir = with_files("epoch");
        let epoch = || Config::from_yaml(WITH_HEADS, &dir).unwrap().cache_epoch;
        let before = epoch();
        assert_eq!(epoch(), before);
        std::fs::write(dir.join("m.onnx"), b"a re-exported encoder").unwrap();
        let after_model = epoch();
        assert_ne!(after_model, before, "a new model at the same path");
        let head = vane_model::head::Head::load(&dir.join("topics.json")).unwrap();
        let retrained = vane_model::head::Head::new(vec!["math".into(), "law".into(), "history".into()], vane_model::head::Params::zeros(vane_model::head::Kind::Softmax, 4, 0, 3), head.meta.clone());
        retrained.save(&dir.join("topics.json")).unwrap();
        assert_ne!(epoch(), after_model, "a retrained head at the same path");
    }

    #[test]
    fn other_routers_names_are_accepted() {
        let c = Config::parse(&format!("{GOOD}cache: {{ similarity_threshold: 0.95, eviction_policy: fifo, backend_type: memory }}\n"), Path::new("/")).unwrap();
        assert_eq!((c.cache.threshold, c.cache.eviction, c.cache.backend), (0.95, vane_cache::eviction::Policy::Fifo, Backend::Memory));
    }

    #[test]
    fn knobs_the_backend_ignores_are_errors() {
        let e = err(&format!("{GOOD}cache: {{ backend: milvus, snapshot: s.snap, max_entries: 5, max_bytes: 8MiB, eviction: lfu }}\n"));
        for knob in ["cache.snapshot:", "cache.max_entries:", "cache.max_bytes:", "cache.eviction:"] {
            assert!(e.contains(&format!("{knob} has no effect with cache.backend: milvus")), "{e}\nshould name {knob}");
        }
        let e = err(&format!("{GOOD}cache: {{ milvus: {{ address: 'http://m:19530' }} }}\n"));
        assert!(e.contains("cache.milvus: has no effect with cache.backend: memory"), "{e}");
        assert!(Config::parse(&format!("{GOOD}cache: {{ backend: milvus, ttl_seconds: 60, threshold: 0.9 }}\n"), Path::new("/")).is_ok(), "what Milvus uses is fine");
    }

    #[test]
    fn every_model_a_route_chooses_must_be_listed_when_models_are() {
        let listed = GOOD.replace("routing:\n", "routing:\n  models: { general: {}, math-model: {} }\n");
        assert!(Config::parse(&listed, Path::new("/")).is_ok());
        let e = err(&listed.replace("model: math-model", "model: math-modle"));
        assert!(e.contains("routing.categories[0].model: 'math-modle' is not in routing.models"), "{e}");
        let e = err(&listed.replace("default_model: general", "default_model: genral"));
        assert!(e.contains("routing.default_model: 'genral' is not in routing.models"), "{e}");
        assert!(Config::parse(&GOOD.replace("model: math-model", "model: anything"), Path::new("/")).is_ok(), "no list, no check");
    }

    /// config/vane.yaml spells out its knobs for the reader; where it sets one, it sets the
    /// code's default, so that a config without the line behaves as the demo does.
    #[test]
    fn the_demo_config_and_the_code_defaults_agree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let demo = Config::load_sections(&dir.join("vane.yaml")).unwrap();
        let bare = Config::parse("model: { onnx: m.onnx, tokenizer: t.json }\nrouting: { default_model: m }\nsafety: { jailbreak: { head: h.json, threshold: 0.5 } }\n", &dir).unwrap();
        let (m, b) = (&demo.model, &bare.model);
        assert_eq!((m.max_tokens, m.threads, m.encoders, m.max_batch, m.max_batch_tokens, m.max_wait_us, m.max_pass_ms, m.queue, m.device), (b.max_tokens, b.threads, b.encoders, b.max_batch, b.max_batch_tokens, b.max_wait_us, b.max_pass_ms, b.queue, b.device));
        let (r, b) = (&demo.routing, &bare.routing);
        assert_eq!((r.confidence_floor, r.example_similarity, r.max_unknown_share, &r.default_reasoning_effort), (b.confidence_floor, b.example_similarity, b.max_unknown_share, &b.default_reasoning_effort));
        let (t, u) = (&r.multi_turn, &b.multi_turn);
        assert_eq!((t.history_weight, t.sticky, t.upgrade_margin), (u.history_weight, u.sticky, u.upgrade_margin));
        let (c, b) = (&demo.cache, &bare.cache);
        assert_eq!((c.enabled, c.threshold, c.max_unknown_share, c.ttl_seconds, c.max_entries, c.eviction), (b.enabled, b.threshold, b.max_unknown_share, b.ttl_seconds, b.max_entries, b.eviction));
        let (j, b) = (demo.safety.jailbreak.as_ref().unwrap(), bare.safety.jailbreak.as_ref().unwrap());
        assert_eq!((j.action, j.max_windows, j.deadline_ms, j.oversize), (b.action, b.max_windows, b.deadline_ms, b.oversize));
        assert_eq!((demo.server.grpc, demo.server.admin), (bare.server.grpc, bare.server.admin));
    }

    #[test]
    fn only_changes_outside_the_live_fields_need_a_restart() {
        let parse = |text: &str| Config::parse(text, Path::new("/")).unwrap();
        let base = parse(&format!("{GOOD}cache: {{ threshold: 0.9, ttl_seconds: 60 }}\n"));
        let restart = |text: String| restart_fields(&base, &parse(&text));
        assert!(restart(format!("{GOOD}cache: {{ threshold: 0.9, ttl_seconds: 60 }}\n")).is_empty(), "the same");
        let live = GOOD.replace("model: math-model", "model: other-model").replace("default_model: general", "default_model: g2")
            + "cache: { similarity_threshold: 0.8, ttl_seconds: 60, categories: { math: { enabled: false } }, max_unknown_share: 0.2, store: { allow_finish_reasons: [stop, length] } }\nsafety: { jailbreak: { head: h.json, threshold: 0.5 } }\n";
        assert_eq!(restart(live), Vec::<String>::new(), "routing, safety and the cache's policy apply live");
        let text = GOOD.replace("tokenizer: t.json", "tokenizer: t2.json, threads: 3") + "server: { grpc: 127.0.0.1:1 }\ncache: { threshold: 0.9, backend: milvus }\n";
        assert_eq!(restart(text), ["cache.backend", "cache.ttl_seconds", "model.threads", "model.tokenizer", "server.grpc"]);
        let mut other_encoder = base.clone();
        other_encoder.encoder_digests = vec![[1; 32]];
        assert_eq!(restart_fields(&base, &other_encoder), ["model (the encoder files' contents)"]);
    }

    #[test]
    fn the_finish_reasons_stored_default_to_complete_answers_and_are_checked() {
        let c = Config::parse(GOOD, Path::new("/")).unwrap();
        assert_eq!(c.cache.store.allow_finish_reasons, ["stop", "tool_calls", "function_call"]);
        let c = Config::parse(&format!("{GOOD}cache: {{ store: {{ allow_finish_reasons: [stop, length, eos_token] }} }}\n"), Path::new("/")).unwrap();
        assert_eq!(c.cache.store.allow_finish_reasons, ["stop", "length", "eos_token"]);
        let e = err(&format!("{GOOD}cache: {{ store: {{ allow_finish_reasons: [] }} }}\n"));
        assert!(e.contains("\n  cache.store.allow_finish_reasons: give at least one"), "{e}");
        assert!(err(&format!("{GOOD}cache: {{ store: {{ allow_finish_reasons: [stop, ' '] }} }}\n")).contains("cache.store.allow_finish_reasons[1]: must be a finish reason"));
        assert!(err(&format!("{GOOD}cache: {{ store: {{ allow_finish_reason: [stop] }} }}\n")).contains("allow_finish_reason"), "unknown fields are errors");
    }

    #[test]
    fn duplicate_categories_are_rejected() {
        let text = GOOD.to_string() + "    - { name: math, model: m2, examples: [a] }\n";
        assert!(err(&text).contains("routing.categories[1].name: 'math' is defined twice"));
    }
}
