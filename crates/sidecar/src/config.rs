//! The sidecar's configuration (`config/vane.yaml`).
//!
//! Parsed strictly (unknown fields are errors, with their path), then validated as a whole so
//! that every problem is reported at once, each with the path of the field at fault.
//! Relative file paths are resolved against the directory of the config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

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
    /// Hash of the configuration that shapes cached answers ([`cache_epoch`]): part of every
    /// cache key, so a changed encoder, routing or safety policy never serves older answers.
    #[serde(skip)]
    pub cache_epoch: String,
    #[serde(default)]
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub routing: RoutingConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Which PII types each model may receive, and what to do about the others.
    #[serde(default)]
    pub pii: Option<crate::signals::pii_policy::PiiPolicyConfig>,
    /// Jailbreak and prompt-injection detection (a binary head over the embedding).
    #[serde(default)]
    pub jailbreak: Option<JailbreakConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailbreakConfig {
    pub head: PathBuf,
    /// The head's label meaning "this is a jailbreak".
    #[serde(default = "defaults::success_label")]
    pub positive_label: String,
    /// Score (the positive label's probability, most suspicious window) at which to act.
    pub threshold: f32,
    #[serde(default)]
    pub action: JailbreakAction,
    /// Per routing category: another threshold or action (e.g. `off` for a red-team category).
    #[serde(default)]
    pub categories: BTreeMap<String, JailbreakOverride>,
    /// Windows (one encoder pass each) one request's client text may take: the prompt's beyond
    /// the shared embedding, and those of every other message and text part.
    #[serde(default = "defaults::max_windows")]
    pub max_windows: usize,
    /// For a request whose text cannot be judged in full (more windows than `max_windows`, or
    /// windows not embedded by `deadline_ms`).
    #[serde(default)]
    pub oversize: Oversize,
    /// How long after the Route began the windows may take; past it the rest is unjudged. Keep
    /// it under the filter's `timeout_ms` (200 by default), or the filter gives up first.
    #[serde(default = "defaults::deadline_ms")]
    pub deadline_ms: u64,
}

/// What happens to text the jailbreak check could not judge in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Refuse: 400 `prompt_too_long_to_judge` over the budget, 503
    /// `jailbreak_check_unavailable` when the windows could not be done in time.
    #[default]
    Block,
    /// Judge what fits and forward with `x-vane-jailbreak: <score>` (never cached).
    Flag,
    /// Judge what fits (windows with jailbreak wording first); logged as `unjudged_allow`.
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JailbreakAction {
    /// 403 with code `jailbreak_detected`; nothing reaches the model.
    #[default]
    Block,
    /// Forward, with `x-vane-jailbreak: <score>` to the upstream and the client; never cached.
    Flag,
    Off,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailbreakOverride {
    pub threshold: Option<f32>,
    pub action: Option<JailbreakAction>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC address the filter calls (`vane.v1.Router`).
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
    /// The gRPC decoding limit: the larger RPC cap plus room for the other fields, so that an
    /// oversized prompt or answer is refused by our own check, with a clear message and reason.
    pub fn max_message_bytes(&self) -> usize {
        self.max_route_bytes.max(self.max_store_bytes).saturating_add(64 << 10)
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
    /// Encoder sessions, each on its own thread, taking turns at the batch queue: more
    /// throughput on several cores at the same single-request latency (memory: one model each).
    #[serde(default = "defaults::encoders")]
    pub encoders: usize,
    /// Most prompts embedded in one encoder pass.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Most padded tokens (prompts x longest prompt) in one pass.
    #[serde(default = "defaults::max_batch_tokens")]
    pub max_batch_tokens: usize,
    /// How long a prompt may wait for others to share its pass (0: only those already queued).
    #[serde(default)]
    pub max_wait_us: u64,
    /// Where the encoder runs: `cpu`, or `cuda` (needs the `cuda` build feature and a GPU).
    #[serde(default)]
    pub device: Device,
    /// Prompts waiting for the encoder; beyond it requests get RESOURCE_EXHAUSTED (the filter fails open).
    #[serde(default = "defaults::queue")]
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Model names that mean "let Vane choose"; any other model name is kept as asked.
    #[serde(default = "defaults::aliases")]
    pub aliases: Vec<String>,
    /// Where a prompt goes when no category is confident enough.
    pub default_model: String,
    /// Below this head probability, the prompt is not given the head's category.
    #[serde(default = "defaults::confidence_floor")]
    pub confidence_floor: f32,
    /// Below this similarity to a category's examples, the prompt is not in that category.
    #[serde(default = "defaults::example_similarity")]
    pub example_similarity: f32,
    /// Above this share of tokens unknown to the encoder's vocabulary the encoder could not
    /// read the prompt: it goes to `default_model` (category `default`) instead of wherever a
    /// head would guess from `[UNK]` tokens. English stays below 0.11, 98% of CMMLU's Chinese
    /// questions are above 0.2 (docs/cache-threshold.md, "Text the encoder cannot read").
    #[serde(default = "defaults::routing_max_unknown_share")]
    pub max_unknown_share: f32,
    #[serde(default)]
    pub categories: Vec<Category>,
    /// A trained classifier head over the embedding (`vane-embedder train`), e.g.
    /// `heads/mmlu_pro_categories.json`; relative to this file. Its labels are categories.
    #[serde(default)]
    pub head: Option<PathBuf>,
    /// What Vane knows about each model: relative cost and reasoning family.
    #[serde(default)]
    pub models: BTreeMap<String, ModelInfo>,
    /// How a family switches reasoning on; qwen3, deepseek and gpt-oss are built in.
    #[serde(default)]
    pub reasoning_families: BTreeMap<String, ReasoningFamily>,
    /// Effort for `reasoning_effort` families when a category asks for reasoning.
    #[serde(default = "defaults::reasoning_effort")]
    pub default_reasoning_effort: String,
    #[serde(default)]
    pub multi_turn: MultiTurnConfig,
    /// Send a prompt to the smaller model when a head predicts it will answer correctly.
    #[serde(default)]
    pub cost_aware: Option<CostAwareConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// A label of the head, or (with `examples`) a category of its own.
    pub name: String,
    /// Shorthand for `model_scores: [{model: X, score: 1}]`.
    #[serde(default)]
    pub model: Option<String>,
    /// Candidate models; the best score wins.
    #[serde(default)]
    pub model_scores: Vec<ModelScore>,
    #[serde(default)]
    pub use_reasoning: bool,
    /// For `reasoning_effort` families [default: routing.default_reasoning_effort].
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Example prompts; a prompt belongs to the category whose examples it is most similar to.
    #[serde(default)]
    pub examples: Vec<String>,
}

impl Category {
    /// The model with the best score (the first on ties), and whether it should reason.
    pub fn best(&self) -> Option<(&str, bool)> {
        if let Some(m) = &self.model {
            return Some((m, self.use_reasoning));
        }
        let mut best: Option<&ModelScore> = None;
        for s in &self.model_scores {
            if best.is_none_or(|b| s.score > b.score) {
                best = Some(s);
            }
        }
        best.map(|s| (s.model.as_str(), s.use_reasoning.unwrap_or(self.use_reasoning)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScore {
    pub model: String,
    pub score: f32,
    /// Overrides the category's `use_reasoning` for this model.
    #[serde(default)]
    pub use_reasoning: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Relative price; conversations only move to costlier models.
    #[serde(default = "defaults::cost")]
    pub cost: f64,
    #[serde(default)]
    pub reasoning_family: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReasoningFamily {
    pub r#type: ReasoningType,
    /// The field to set: `chat_template_kwargs.<parameter>` or the top-level `<parameter>`.
    pub parameter: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningType {
    /// `chat_template_kwargs: {<parameter>: true|false}` (vLLM / SGLang chat templates).
    ChatTemplateKwargs,
    /// `<parameter>: <effort>` (OpenAI-style `reasoning_effort`); "low" when reasoning is off.
    ReasoningEffort,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiTurnConfig {
    /// Weight of the earlier user turns against the new one when classifying (0: last turn only).
    pub history_weight: f32,
    /// Keep a conversation on the model it started with...
    pub sticky: bool,
    /// ...unless the new turn needs a costlier model with at least this much more confidence
    /// than the routing floor.
    pub upgrade_margin: f32,
    /// Conversations remembered (least recently seen forgotten first), and for how long.
    pub max_conversations: usize,
    pub ttl_seconds: u64,
}

impl Default for MultiTurnConfig {
    fn default() -> Self {
        MultiTurnConfig { history_weight: 0.5, sticky: true, upgrade_margin: 0.2, max_conversations: 100_000, ttl_seconds: 3600 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostAwareConfig {
    /// A binary head predicting whether `small_model` answers the prompt correctly.
    pub head: PathBuf,
    /// The head's label meaning "the small model succeeds".
    #[serde(default = "defaults::success_label")]
    pub success_label: String,
    /// Use the small model when its predicted success is at least this.
    pub bar: f32,
    pub small_model: String,
    /// Only prompts routed to this model are considered for the small one.
    pub large_model: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Cosine similarity between prompts at or above which a cached answer is served.
    pub threshold: f32,
    /// Above this share of tokens unknown to the encoder's vocabulary a prompt's embedding does
    /// not stand for it: no semantic hit for it, and it is stored for the exact tier only.
    /// 0 (the default): one unknown token is enough, since it can be the whole difference
    /// (秦/唐, ⊃/∨, 🐱/🐶); see docs/cache-threshold.md for what that costs.
    pub max_unknown_share: f32,
    pub ttl_seconds: u64,
    /// Beyond this many entries one is evicted per insertion, chosen by `eviction` (embedded backend).
    pub max_entries: usize,
    /// Beyond this many bytes (prompt + answer + vector + bookkeeping, estimated per entry)
    /// entries are evicted by `eviction` until the new one fits (embedded backend): `max_entries`
    /// alone bounds the count, not the memory.
    #[serde(deserialize_with = "bytes")]
    pub max_bytes: usize,
    /// An entry larger than this is never stored (`vane_cache_stores_total{result="too_large"}`),
    /// and Route issues no ticket for a prompt that alone exceeds it (both backends).
    #[serde(deserialize_with = "bytes")]
    pub max_entry_bytes: usize,
    /// Answers awaited: what Route computed for a request, kept until its Store or Release.
    pub tickets: TicketsConfig,
    pub eviction: crate::cache::eviction::Policy,
    /// Where the embedded cache is saved at shutdown (and every `snapshot_interval_seconds`,
    /// 0 = only at shutdown) and loaded from at start; none by default.
    pub snapshot: Option<PathBuf>,
    pub snapshot_interval_seconds: u64,
    /// Per routing category: its own threshold, or `enabled: false` to never cache it.
    pub categories: BTreeMap<String, CacheCategory>,
    /// Where entries live: `memory` (this process) or `milvus` (shared, survives restarts).
    pub backend: Backend,
    /// Used when `backend: milvus`.
    pub milvus: MilvusConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            threshold: 0.93,
            max_unknown_share: 0.0,
            ttl_seconds: 3600,
            max_entries: 10_000,
            max_bytes: 256 << 20,
            max_entry_bytes: 1 << 20,
            tickets: TicketsConfig::default(),
            eviction: Default::default(),
            snapshot: None,
            snapshot_interval_seconds: 300,
            categories: BTreeMap::new(),
            backend: Backend::Memory,
            milvus: MilvusConfig::default(),
        }
    }
}

/// Pending tickets: each holds the prompt and its embedding from Route until the answer comes
/// back in Store, or the filter reports (Release) that none will. Bounded in count and bytes
/// (the oldest leave first) and in time, so answers that never come cannot grow the sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    pub max_count: usize,
    /// Prompt + embedding + bookkeeping of all pending tickets, estimated.
    #[serde(deserialize_with = "bytes")]
    pub max_bytes: usize,
    /// How long an answer may take to arrive after its Route.
    pub ttl_seconds: u64,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig { max_count: 100_000, max_bytes: 256 << 20, ttl_seconds: 600 }
    }
}

/// A size in bytes: an integer, or a string with a binary unit (`64KiB`, `256 MiB`, `1GiB`).
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(usize),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(t) => parse_bytes(&t).ok_or_else(|| serde::de::Error::custom(format!("'{t}' is not a size: give bytes, or a number with KiB, MiB or GiB"))),
    }
}

fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    number.parse::<usize>().ok()?.checked_mul(1 << shift)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Memory,
    Milvus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MilvusConfig {
    pub address: String,
    pub collection: String,
    pub consistency: Consistency,
    /// Per Milvus call (and connect): the most a request waits on Milvus before it is a miss. A
    /// Route makes up to two calls (exact, semantic): keep 2x this under the filter's timeout_ms.
    pub timeout_ms: u64,
    /// Nearest candidates fetched per semantic lookup, for the near-duplicate guard to choose from.
    pub top_k: usize,
    /// HNSW search breadth (at least `top_k`).
    pub ef: usize,
    /// How often expired entries are deleted.
    pub cleanup_seconds: u64,
}

impl Default for MilvusConfig {
    fn default() -> Self {
        MilvusConfig {
            address: "http://127.0.0.1:19530".into(),
            collection: "vane_cache".into(),
            consistency: Consistency::Bounded,
            timeout_ms: 80,
            top_k: 5,
            ef: 64,
            cleanup_seconds: 60,
        }
    }
}

/// Milvus read consistency. `bounded` (default): a search never waits for writes; a fresh store
/// is found once the query node has consumed it (within the ~200 ms time-tick on 2.3.5), which
/// for a cache only means a miss in that window. `session` waits for this client's own writes,
/// so the first lookups after a store wait up to that tick (over the lookup timeout); `strong`
/// waits on every search (~200 ms on 2.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Strong,
    Session,
    Bounded,
    Eventually,
}

impl Consistency {
    pub fn level(self) -> milvus::v2::ConsistencyLevel {
        match self {
            Consistency::Strong => milvus::v2::ConsistencyLevel::Strong,
            Consistency::Session => milvus::v2::ConsistencyLevel::Session,
            Consistency::Bounded => milvus::v2::ConsistencyLevel::Bounded,
            Consistency::Eventually => milvus::v2::ConsistencyLevel::Eventually,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheCategory {
    pub threshold: Option<f32>,
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
}

/// The smallest byte bound accepted (an entry or ticket holds a 1.5 KiB vector and bookkeeping).
const MIN_BYTES: usize = 4096;

mod defaults {
    pub fn max_tokens() -> usize { 256 }
    pub fn routing_max_unknown_share() -> f32 { 0.2 }
    pub fn threads() -> usize { 1 }
    pub fn encoders() -> usize { 1 }
    pub fn max_batch() -> usize { 32 }
    pub fn max_batch_tokens() -> usize { 8192 }
    pub fn queue() -> usize { 1024 }
    pub fn aliases() -> Vec<String> { vec!["auto".into()] }
    pub fn confidence_floor() -> f32 { 0.3 }
    pub fn example_similarity() -> f32 { 0.5 }
    pub fn reasoning_effort() -> String { "medium".into() }
    pub fn cost() -> f64 { 1.0 }
    pub fn success_label() -> String { "1".into() }
    pub fn enabled() -> bool { true }
    pub fn max_windows() -> usize { MAX_WINDOWS }
    pub fn deadline_ms() -> u64 { 120 }
    /// README "Jailbreak ... budget" has the measurement behind it.
    const MAX_WINDOWS: usize = 64;
}

/// Hash of the parts of a configuration that change what a cached answer would be: the encoder
/// (model file, tokenizer, window), routing, safety and the cache's per-category rules. Comments,
/// formatting, ports and performance knobs (threads, batching, device, cache sizes) are left out.
pub fn cache_epoch(text: &str) -> String {
    use serde_yaml_ng::Value;
    const MODEL_KEYS: [&str; 3] = ["onnx", "tokenizer", "max_tokens"];
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
    let digest = sha2::Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
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
        config.cache_epoch = cache_epoch(text);
        for p in [&mut config.model.onnx, &mut config.model.tokenizer] {
            *p = base.join(&*p);
        }
        for p in [&mut config.model.onnxruntime, &mut config.routing.head].into_iter().flatten() {
            *p = base.join(&*p);
        }
        if let Some(c) = &mut config.routing.cost_aware {
            c.head = base.join(&c.head);
        }
        if let Some(j) = &mut config.safety.jailbreak {
            j.head = base.join(&j.head);
        }
        if let Some(p) = &mut config.cache.snapshot {
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
        check((1..=64).contains(&m.encoders), "model.encoders: must be between 1 and 64".into());
        check(m.max_batch >= 1, "model.max_batch: must be at least 1".into());
        check(m.max_batch_tokens >= m.max_tokens, "model.max_batch_tokens: must be at least model.max_tokens".into());
        check(m.max_wait_us <= 100_000, "model.max_wait_us: must be at most 100000 (0.1 s)".into());
        check(m.queue >= 1, "model.queue: must be at least 1".into());
        let r = &self.routing;
        check(!r.default_model.is_empty(), "routing.default_model: must not be empty".into());
        check((0.0..=1.0).contains(&r.confidence_floor), "routing.confidence_floor: must be between 0 and 1".into());
        check((0.0..=1.0).contains(&r.max_unknown_share), "routing.max_unknown_share: must be between 0 and 1".into());
        check(r.aliases.iter().all(|a| !a.is_empty()), "routing.aliases: names must not be empty".into());
        check((0.0..=1.0).contains(&r.example_similarity), "routing.example_similarity: must be between 0 and 1".into());
        for (i, c) in r.categories.iter().enumerate() {
            let at = format!("routing.categories[{i}]");
            check(!c.name.is_empty(), format!("{at}.name: must not be empty"));
            check(c.model.is_some() == c.model_scores.is_empty(), format!("{at}: give either model or model_scores"));
            check(c.model.as_ref().is_none_or(|m| !m.is_empty()), format!("{at}.model: must not be empty"));
            for (j, s) in c.model_scores.iter().enumerate() {
                check(!s.model.is_empty(), format!("{at}.model_scores[{j}].model: must not be empty"));
                check(s.score.is_finite(), format!("{at}.model_scores[{j}].score: must be a number"));
            }
            check(!c.examples.iter().any(String::is_empty), format!("{at}.examples: must not contain empty prompts"));
            check(!c.examples.is_empty() || r.head.is_some(), format!("{at}.examples: give example prompts, or set routing.head so that '{}' is one of its labels", c.name));
            let dup = r.categories[..i].iter().any(|o| o.name == c.name);
            check(!dup, format!("{at}.name: '{}' is defined twice", c.name));
        }
        for (name, m) in &r.models {
            check(m.cost.is_finite() && m.cost >= 0.0, format!("routing.models.{name}.cost: must be a number >= 0"));
            if let Some(f) = &m.reasoning_family {
                let known = r.reasoning_families.contains_key(f) || crate::routing::reasoning::builtin(f).is_some();
                check(known, format!("routing.models.{name}.reasoning_family: unknown family '{f}' (built in: qwen3, deepseek, gpt-oss; or define it under routing.reasoning_families)"));
            }
        }
        let mt = &r.multi_turn;
        check((0.0..=4.0).contains(&mt.history_weight), "routing.multi_turn.history_weight: must be between 0 and 4".into());
        check((0.0..=1.0).contains(&mt.upgrade_margin), "routing.multi_turn.upgrade_margin: must be between 0 and 1".into());
        check(mt.max_conversations >= 1, "routing.multi_turn.max_conversations: must be at least 1".into());
        if let Some(c) = &r.cost_aware {
            check((0.0..=1.0).contains(&c.bar), "routing.cost_aware.bar: must be between 0 and 1".into());
            check(!c.small_model.is_empty() && !c.large_model.is_empty(), "routing.cost_aware: small_model and large_model must not be empty".into());
        }
        if let Some(p) = &self.safety.pii
            && let Err(e) = crate::signals::pii_policy::PiiPolicy::new(p)
        {
            check(false, e);
        }
        if let Some(j) = &self.safety.jailbreak {
            let thresholds = std::iter::once(("safety.jailbreak.threshold".to_string(), j.threshold))
                .chain(j.categories.iter().filter_map(|(n, o)| o.threshold.map(|t| (format!("safety.jailbreak.categories.{n}.threshold"), t))));
            for (at, t) in thresholds {
                check((0.0..=1.0).contains(&t), format!("{at}: must be between 0 and 1"));
            }
            check((1..=100_000).contains(&j.max_windows), "safety.jailbreak.max_windows: must be between 1 and 100000".into());
            check((1..=60_000).contains(&j.deadline_ms), "safety.jailbreak.deadline_ms: must be between 1 and 60000".into());
        }
        let c = &self.cache;
        check(c.threshold > 0.0 && c.threshold <= 1.0, "cache.threshold: must be in (0, 1]".into());
        check((0.0..=1.0).contains(&c.max_unknown_share), "cache.max_unknown_share: must be between 0 and 1".into());
        check(c.ttl_seconds >= 1, "cache.ttl_seconds: must be at least 1".into());
        check(c.max_entries >= 1, "cache.max_entries: must be at least 1".into());
        // Below a few KiB not even one embedding and its bookkeeping fit.
        check(c.max_entry_bytes >= MIN_BYTES, format!("cache.max_entry_bytes: must be at least {MIN_BYTES}"));
        check(c.max_bytes >= c.max_entry_bytes, "cache.max_bytes: must be at least cache.max_entry_bytes".into());
        check(c.tickets.max_count >= 1, "cache.tickets.max_count: must be at least 1".into());
        check(c.tickets.max_bytes >= MIN_BYTES, format!("cache.tickets.max_bytes: must be at least {MIN_BYTES}"));
        check(c.tickets.ttl_seconds >= 1, "cache.tickets.ttl_seconds: must be at least 1".into());
        check(self.server.max_route_bytes >= MIN_BYTES, format!("server.max_route_bytes: must be at least {MIN_BYTES}"));
        check(self.server.max_store_bytes >= MIN_BYTES, format!("server.max_store_bytes: must be at least {MIN_BYTES}"));
        for (name, cat) in &c.categories {
            if let Some(t) = cat.threshold {
                check(t > 0.0 && t <= 1.0, format!("cache.categories.{name}.threshold: must be in (0, 1]"));
            }
        }
        if let Some(p) = &c.snapshot {
            check(p.file_name().is_some(), format!("cache.snapshot: '{}' is not a file path", p.display()));
        }
        if c.backend == Backend::Milvus {
            let m = &c.milvus;
            check(m.address.starts_with("http://") || m.address.starts_with("https://"), "cache.milvus.address: must be an http:// or https:// URL".into());
            check(!m.collection.is_empty() && m.collection.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'), "cache.milvus.collection: letters, digits and '_' only".into());
            check(m.timeout_ms >= 1, "cache.milvus.timeout_ms: must be at least 1".into());
            check((1..=100).contains(&m.top_k), "cache.milvus.top_k: must be between 1 and 100".into());
            check(m.ef >= m.top_k, "cache.milvus.ef: must be at least top_k".into());
            check(m.cleanup_seconds >= 1, "cache.milvus.cleanup_seconds: must be at least 1".into());
        }
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
        assert_eq!((c.cache.eviction, &c.cache.snapshot), (crate::cache::eviction::Policy::Lru, &None));
        let c = Config::parse(&format!("{GOOD}cache: {{ eviction: lfu, snapshot: state/cache.snap }}"), Path::new("/etc/vane")).unwrap();
        assert_eq!((c.cache.eviction, c.cache.snapshot), (crate::cache::eviction::Policy::Lfu, Some(PathBuf::from("/etc/vane/state/cache.snap"))));
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
        assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes, c.cache.tickets.max_bytes), (256 << 20, 1 << 20, 256 << 20));
        assert_eq!((c.server.max_route_bytes, c.server.max_store_bytes), (2 << 20, 4 << 20));
        let text = format!("{GOOD}server: {{ max_route_bytes: 64KiB, max_store_bytes: 70000 }}\ncache: {{ max_bytes: '1 GiB', max_entry_bytes: 2MiB, tickets: {{ max_bytes: 8MiB, max_count: 5 }} }}\n");
        let c = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!((c.server.max_route_bytes, c.server.max_store_bytes), (64 << 10, 70_000));
        assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes), (1 << 30, 2 << 20));
        assert_eq!((c.cache.tickets.max_bytes, c.cache.tickets.max_count, c.cache.tickets.ttl_seconds), (8 << 20, 5, 600));
        assert_eq!(c.server.max_message_bytes(), 70_000 + (64 << 10));
        let e = err(&format!("{GOOD}cache: {{ max_bytes: 12 MB }}\n"));
        assert!(e.starts_with("cache.max_bytes") && e.contains("KiB, MiB or GiB"), "{e}");
        let e = err(&format!("{GOOD}server: {{ max_route_bytes: 100 }}\ncache: {{ max_bytes: 5KiB, max_entry_bytes: 8KiB, tickets: {{ max_bytes: 0, max_count: 0, ttl_seconds: 0 }} }}\n"));
        for needle in ["server.max_route_bytes", "cache.max_bytes: must be at least cache.max_entry_bytes", "cache.tickets.max_bytes", "cache.tickets.max_count", "cache.tickets.ttl_seconds"] {
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
        assert!(err(&format!("{GOOD}cache: {{ tickets: {{ max: 5 }} }}\n")).contains("max"));
        assert_eq!(parse_bytes("99999999999999GiB"), None, "overflow");
    }

    #[test]
    fn duplicate_categories_are_rejected() {
        let text = GOOD.to_string() + "    - { name: math, model: m2, examples: [a] }\n";
        assert!(err(&text).contains("routing.categories[1].name: 'math' is defined twice"));
    }
}
