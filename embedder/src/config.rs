//! The sidecar's configuration (`config/vane.yaml`).
//!
//! Parsed strictly (unknown fields are errors, with their path), then validated as a whole so
//! that every problem is reported at once, each with the path of the field at fault.
//! Relative file paths are resolved against the directory of the config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub routing: RoutingConfig,
    #[serde(default)]
    pub cache: CacheConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC address the filter calls (`vane.v1.Router`).
    pub grpc: SocketAddr,
    /// Admin HTTP: /metrics, /healthz, /readyz.
    pub admin: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { grpc: ([127, 0, 0, 1], 50051).into(), admin: ([127, 0, 0, 1], 9190).into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The encoder graph (see models/export.py): int8 by default, fp32 selectable.
    pub onnx: PathBuf,
    /// HuggingFace tokenizer.json matching the encoder.
    pub tokenizer: PathBuf,
    /// libonnxruntime.so; when absent, `$ORT_DYLIB_PATH`.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Longer prompts are truncated to this many tokens.
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: usize,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "defaults::threads")]
    pub threads: usize,
    /// Most prompts embedded in one encoder pass.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Prompts waiting for the encoder; beyond it requests get RESOURCE_EXHAUSTED (the filter fails open).
    #[serde(default = "defaults::queue")]
    pub queue: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Model names that mean "let Vane choose"; any other model name is kept as asked.
    #[serde(default = "defaults::aliases")]
    pub aliases: Vec<String>,
    /// Where a prompt goes when no category is confident enough.
    pub default_model: String,
    /// Below this similarity to a category's examples, the default model is used.
    #[serde(default = "defaults::confidence_floor")]
    pub confidence_floor: f32,
    pub categories: Vec<Category>,
    /// A trained classifier head over the embedding (`vane-embedder train`), e.g.
    /// `heads/mmlu_pro_categories.json`; relative to this file. Used by `vane-embedder eval`.
    #[serde(default)]
    pub head: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    pub model: String,
    /// Example prompts; a prompt belongs to the category whose examples it is most similar to.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Cosine similarity between prompts at or above which a cached answer is served.
    pub threshold: f32,
    pub ttl_seconds: u64,
    /// Beyond this many entries the oldest are evicted.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { enabled: true, threshold: 0.9, ttl_seconds: 3600, max_entries: 10_000 }
    }
}

mod defaults {
    pub fn max_tokens() -> usize { 256 }
    pub fn threads() -> usize { 1 }
    pub fn max_batch() -> usize { 32 }
    pub fn queue() -> usize { 1024 }
    pub fn aliases() -> Vec<String> { vec!["auto".into()] }
    pub fn confidence_floor() -> f32 { 0.3 }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses YAML text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse { path: if path == "." { "config".into() } else { path }, message: e.into_inner().to_string() }
        })?;
        config.validate()?;
        for p in [&mut config.model.onnx, &mut config.model.tokenizer] {
            *p = base.join(&*p);
        }
        for p in [&mut config.model.onnxruntime, &mut config.routing.head].into_iter().flatten() {
            *p = base.join(&*p);
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, msg: String| if !ok { errors.push(msg) };
        let m = &self.model;
        check(m.max_tokens >= 8 && m.max_tokens <= 512, "model.max_tokens: must be between 8 and 512".into());
        check(m.threads >= 1, "model.threads: must be at least 1".into());
        check(m.max_batch >= 1, "model.max_batch: must be at least 1".into());
        check(m.queue >= 1, "model.queue: must be at least 1".into());
        let r = &self.routing;
        check(!r.default_model.is_empty(), "routing.default_model: must not be empty".into());
        check((0.0..=1.0).contains(&r.confidence_floor), "routing.confidence_floor: must be between 0 and 1".into());
        check(r.aliases.iter().all(|a| !a.is_empty()), "routing.aliases: names must not be empty".into());
        for (i, c) in r.categories.iter().enumerate() {
            check(!c.name.is_empty(), format!("routing.categories[{i}].name: must not be empty"));
            check(!c.model.is_empty(), format!("routing.categories[{i}].model: must not be empty"));
            check(!c.examples.is_empty(), format!("routing.categories[{i}].examples: give at least one example prompt"));
            let dup = r.categories[..i].iter().any(|o| o.name == c.name);
            check(!dup, format!("routing.categories[{i}].name: '{}' is defined twice", c.name));
        }
        let c = &self.cache;
        check(c.threshold > 0.0 && c.threshold <= 1.0, "cache.threshold: must be in (0, 1]".into());
        check(c.ttl_seconds >= 1, "cache.ttl_seconds: must be at least 1".into());
        check(c.max_entries >= 1, "cache.max_entries: must be at least 1".into());
        if errors.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(errors)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn defaults_and_relative_paths() {
        let c = Config::parse(GOOD, Path::new("/etc/vane")).unwrap();
        assert_eq!(c.model.onnx, PathBuf::from("/etc/vane/m.onnx"));
        assert_eq!(c.routing.aliases, vec!["auto"]);
        assert!(c.cache.enabled);
        assert_eq!(c.server.grpc.port(), 50051);
        assert_eq!(c.routing.head, None);
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
    fn duplicate_categories_are_rejected() {
        let text = GOOD.to_string() + "    - { name: math, model: m2, examples: [a] }\n";
        assert!(err(&text).contains("routing.categories[1].name: 'math' is defined twice"));
    }
}
