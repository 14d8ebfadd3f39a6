//! Fuzzing the sidecar's readers of untrusted text: the configuration (parsing, the `extends`
//! chain, what a reload compares) and the store policy (what of an upstream answer may be
//! cached, SSE assembly included). Each target (a `proptest!` block: the configuration,
//! the store policy) gets `VANE_FUZZ_CASES` inputs, split between its properties (see
//! `vane-fuzz`). Found cases are kept at the end as named tests, and proptest replays the seeds
//! in `proptest-regressions/fuzz.txt` first.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use vane_cache::config::StoreConfig;
use vane_fuzz::openai::{completion, stream};
use vane_fuzz::{config, json, mutate, peak_bytes, soup};
use vane_sidecar::completion::{Answer, StorePolicy};
use vane_sidecar::config::{Config, ConfigError, LIVE_FIELDS, cache_epoch, read_layers, restart_fields};

/// A small valid configuration with every section (the shipped `config/vane.yaml` is too slow
/// to parse a million times in a debug build; it is one of the bases all the same).
const BASE: &str = r#"
server: { grpc: 127.0.0.1:50051, admin: 127.0.0.1:9190, max_route_bytes: 2MiB }
model: { onnx: m.onnx, tokenizer: t.json, max_tokens: 256, threads: 1 }
routing:
  aliases: [auto]
  default_model: general
  models: { math-model: { cost: 3, reasoning_family: qwen3 }, general: { cost: 1 } }
  categories:
    - { name: math, model: math-model, examples: ["solve x"], use_reasoning: true }
    - name: law
      model_scores: [{ model: general, score: 0.5 }]
cache: { enabled: true, threshold: 0.93, ttl_seconds: 60, max_entries: 100, eviction: lru, categories: { math: { threshold: 0.95 } }, store: { allow_finish_reasons: [stop] } }
safety: { jailbreak: { head: jb.json, threshold: 0.85, action: flag } }
tracing: { enabled: false }
"#;

const SHIPPED: &str = include_str!("../../../config/vane.yaml");

/// What YAML and the configuration are made of.
const YAML_TOKENS: &[&str] = &[
    "server:", "model:", "routing:", "cache:", "safety:", "tracing:", "extends:", "\n", "\n  ", "  ", ": ", "- ", "{", "}", "[", "]", ",", "'", "\"", "&a",
    "*a", "!!str", "!!binary", "---", "...", "#", "|", ">", "~", "null", "0.5", "-1", "1e400", "2MiB", "99999999999999GiB", "127.0.0.1:1", "<<: *a",
    "? ", "%YAML 1.2", "\t",
];

const SECTIONS: &[&str] = &["server", "model", "routing", "cache", "safety", "tracing"];
const FIELDS: &[&str] = &[
    "grpc", "admin", "max_route_bytes", "max_store_bytes", "onnx", "tokenizer", "max_tokens", "threads", "encoders", "max_batch", "device", "aliases",
    "default_model", "models", "categories", "confidence_floor", "multi_turn", "head", "enabled", "threshold", "ttl_seconds", "max_entries",
    "max_bytes", "eviction", "backend", "milvus", "store", "tickets", "snapshot", "jailbreak", "pii", "action", "endpoint", "protocol", "sampling_ratio",
];

/// Most heap a parse may hold per byte of YAML, plus a constant: linear, aliases or not.
const BYTES_PER_BYTE: usize = 400;
const SLACK: usize = 1 << 20;

static BASE_DOC: std::sync::LazyLock<serde_yaml_ng::Value> = std::sync::LazyLock::new(|| serde_yaml_ng::from_str(BASE).unwrap());

/// BASE with one field of one section set to an arbitrary value.
fn overridden() -> impl Strategy<Value = String> {
    (select(SECTIONS.to_vec()), select(FIELDS.to_vec()), json(FIELDS.to_vec())).prop_map(|(section, field, value)| {
        let mut doc = BASE_DOC.clone();
        let value: serde_yaml_ng::Value = serde_yaml_ng::to_value(&value).unwrap();
        if let Some(s) = doc.get_mut(section).and_then(serde_yaml_ng::Value::as_mapping_mut) {
            s.insert(field.into(), value);
        }
        serde_yaml_ng::to_string(&doc).unwrap()
    })
}

/// Configuration texts: valid ones broken by a few edits, single-field overrides, YAML soup,
/// arbitrary JSON (which is YAML).
fn config_text() -> impl Strategy<Value = String> {
    let lossy = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    prop_oneof![
        4 => mutate(Just(BASE.as_bytes().to_vec())).prop_map(lossy),
        1 => mutate(Just(SHIPPED.as_bytes().to_vec())).prop_map(lossy),
        4 => overridden(),
        2 => soup(YAML_TOKENS.to_vec(), 32),
        1 => json(SECTIONS.iter().chain(FIELDS).copied().collect()).prop_map(|v| v.to_string()),
    ]
}

/// A clear error: it names a field (or the file) and says what is wrong.
fn check_error(e: &ConfigError) -> Result<(), TestCaseError> {
    match e {
        ConfigError::Parse { path, message } => prop_assert!(!path.is_empty() && !message.is_empty(), "{e:?}"),
        ConfigError::Invalid(errors) => prop_assert!(!errors.is_empty() && errors.iter().all(|e| e.contains(": ")), "{errors:?}"),
        ConfigError::Read { .. } => prop_assert!(false, "parse read a file: {e:?}"),
    }
    prop_assert!(!e.to_string().is_empty());
    Ok(())
}

thread_local! {
    /// A directory per test thread for the `extends` files.
    static DIR: PathBuf = {
        let dir = std::env::temp_dir().join(format!("vane-fuzz-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
}

fn is_live(field: &str) -> bool {
    LIVE_FIELDS.iter().any(|live| field == *live || field.starts_with(&format!("{live}.")))
}

proptest! {
    #![proptest_config(config(2))]

    /// Configuration parsing, any text: a configuration or an error naming the field at fault,
    /// never a panic; heap linear in the text (YAML aliases included); the cache epoch of any
    /// text is 16 hex digits, the same every time.
    #[test]
    fn fuzz_config_sidecar_parse(text in config_text()) {
        let (parsed, peak) = peak_bytes(|| Config::parse(&text, Path::new("/etc/vane")));
        prop_assert!(peak <= BYTES_PER_BYTE * text.len() + SLACK, "{peak} bytes for {} bytes of YAML", text.len());
        if let Err(e) = &parsed {
            check_error(e)?;
        }
        let epoch = cache_epoch(&text, &[]);
        prop_assert!(epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()), "{epoch}");
        prop_assert_eq!(epoch, cache_epoch(&text, &[]));
    }

    /// Reload: between any two accepted configurations the fields that need a restart are
    /// none for the same one, the same set both ways, and never a live field; an `extends`
    /// chain of any two files is merged or refused with an error, never a panic.
    #[test]
    fn fuzz_config_sidecar_reload(a in overridden(), b in overridden(), base in config_text(), extends in select(vec!["base.yaml", "over.yaml", "../base.yaml", "", "missing.yaml"])) {
        let parse = |t: &str| Config::parse(t, Path::new("/etc/vane")).ok();
        if let (Some(a), Some(b)) = (parse(&a), parse(&b)) {
            prop_assert!(restart_fields(&a, &a).is_empty());
            let mut ab = restart_fields(&a, &b);
            let mut ba = restart_fields(&b, &a);
            prop_assert!(ab.iter().all(|f| !is_live(f)), "{ab:?}");
            ab.sort();
            ba.sort();
            prop_assert_eq!(ab, ba);
        }
        DIR.with(|dir| -> Result<(), TestCaseError> {
            std::fs::write(dir.join("base.yaml"), &base).unwrap();
            std::fs::write(dir.join("over.yaml"), format!("extends: '{extends}'\n{a}")).unwrap();
            match read_layers(&dir.join("over.yaml")) {
                Ok(text) => {
                    prop_assert!(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).is_ok());
                    prop_assert_eq!(extends, "base.yaml");
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })?;
    }
}

// --- the store policy ---

const MAX_STORE: usize = 64 << 10;

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["application/json", "text/event-stream", "text/event-stream; charset=utf-8", "Application/JSON", "text/plain", "", "application/json;"]).prop_map(str::to_owned),
        1 => soup(vec!["application/json", "text/event-stream", ";", " "], 3),
    ]
}

fn cache_control() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["", "no-cache", "no-store", "private", "max-age=5, private=\"x\"", "public", "NO-STORE"]).prop_map(str::to_owned),
        1 => soup(vec!["no-store", "private", ",", "=", " "], 4),
    ]
}

fn answer_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => stream().prop_map(|s| s.body),
        3 => mutate(stream().prop_map(|s| s.body)),
        2 => completion().prop_map(|c| c.to_string().into_bytes()),
        2 => mutate(completion().prop_map(|c| c.to_string().into_bytes())),
        1 => json(vec!["error", "object", "choices", "message", "finish_reason", "type", "data"]).prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(config(2))]

    /// Store policy, any answer: stored or refused with a label from the bounded set, never a
    /// panic; heap linear in the body; what is stored is a `chat.completion` with a choice,
    /// every choice finished with an allowed reason, from a 200 that did not forbid storing.
    #[test]
    fn fuzz_store_policy(
        status in prop_oneof![4 => Just(200u32), 1 => select(vec![0u32, 201, 203, 206, 429, 500]), 1 => any::<u32>()],
        content_type in content_type(),
        cache_control in cache_control(),
        body in answer_body(),
    ) {
        let policy = StorePolicy::new(&StoreConfig::default(), MAX_STORE);
        // The notice pattern is compiled on first use (~160 KB): not the answer's doing. The
        // warm-up must reach the pattern (an empty text has no clause to match).
        assert!(vane_sidecar::completion::is_overload_notice("Service unavailable, please try again later."));
        let answer = Answer { status, content_type: &content_type, cache_control: &cache_control, body: &body };
        let (checked, peak) = peak_bytes(|| policy.check(answer));
        prop_assert!(peak <= 200 * body.len() + (64 << 10), "{peak} bytes for {}", body.len());
        match checked {
            Ok(c) => {
                prop_assert_eq!(status, 200);
                prop_assert!(body.len() <= MAX_STORE);
                let forbids = cache_control.split(',').any(|d| ["no-store", "private"].iter().any(|f| d.split('=').next().unwrap_or("").trim().eq_ignore_ascii_case(f)));
                prop_assert!(!forbids, "{cache_control:?}");
                let v: Value = serde_json::from_slice(&c).unwrap();
                prop_assert_eq!(&v["object"], "chat.completion");
                let choices = v["choices"].as_array().unwrap();
                prop_assert!(!choices.is_empty());
                for choice in choices {
                    prop_assert!(["stop", "tool_calls", "function_call"].contains(&choice["finish_reason"].as_str().unwrap_or("")), "{choice}");
                }
            }
            Err(e) => prop_assert!(vane_sidecar::completion::NotCacheable::LABELS.contains(&e.label()), "{e:?}"),
        }
    }

    /// Store policy, a complete streamed answer from a 200: stored, as the completion the
    /// stream assembles into, when every choice finished with an allowed reason; else refused
    /// for its finish reason.
    #[test]
    fn fuzz_store_policy_valid_stream(s in stream()) {
        let policy = StorePolicy::new(&StoreConfig::default(), MAX_STORE);
        let answer = Answer { status: 200, content_type: "text/event-stream", cache_control: "no-cache", body: &s.body };
        let allowed = s.completion["choices"].as_array().unwrap().iter().all(|c| c["finish_reason"] == "stop" || c["finish_reason"] == "tool_calls");
        match policy.check(answer) {
            Ok(stored) => {
                prop_assert!(allowed);
                prop_assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), s.completion);
            }
            Err(e) => prop_assert!(!allowed && e.label().starts_with("finish_"), "{e:?}"),
        }
    }
}

// --- cases found by fuzzing, kept as regressions ---

/// `{"": null}`: an unknown empty key at the top level was reported with an empty field path.
#[test]
fn regression_an_unknown_empty_key_is_named_in_the_config() {
    match Config::parse("{\"\": null}", Path::new("/etc/vane")) {
        Err(ConfigError::Parse { path, message }) => assert_eq!((path.as_str(), message.contains("unknown field")), ("config", true), "{message}"),
        other => panic!("{other:?}"),
    }
}
