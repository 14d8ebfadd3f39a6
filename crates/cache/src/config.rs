//! `cache:` — the semantic cache: thresholds, bounds, eviction, snapshot, per-category rules,
//! which answers may be stored, the backend (`memory` or `milvus`) and the tickets' expiry and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vane_model::language::Language;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Cosine similarity between prompts at or above which a cached answer is served.
    #[serde(alias = "similarity_threshold")]
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
    /// Which complete answers may be stored (the sidecar's `completion` module has every rule).
    pub store: StoreConfig,
    #[serde(alias = "eviction_policy")]
    pub eviction: crate::eviction::Policy,
    /// Where the embedded cache is saved at shutdown (and every `snapshot_interval_seconds`,
    /// 0 = only at shutdown) and loaded from at start; none by default.
    pub snapshot: Option<PathBuf>,
    pub snapshot_interval_seconds: u64,
    /// Per routing category: its own threshold, or `enabled: false` to never cache it.
    pub categories: BTreeMap<String, CacheCategory>,
    /// Per prompt language (`zh: { threshold: 0.95 }`), as for categories; with both, the
    /// stricter applies. Languages the encoder does not read never reach the semantic tier.
    pub languages: BTreeMap<Language, CacheCategory>,
    /// Where entries live: `memory` (this process) or `milvus` (shared, survives restarts).
    #[serde(alias = "backend_type")]
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
            store: StoreConfig::default(),
            eviction: Default::default(),
            snapshot: None,
            snapshot_interval_seconds: 300,
            categories: BTreeMap::new(),
            languages: BTreeMap::new(),
            backend: Backend::Memory,
            milvus: MilvusConfig::default(),
        }
    }
}

/// Tickets: what Route hands the filter for the Store of the answer, sealed (the sidecar's
/// `tickets` module). The sidecar keeps nothing per ticket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    /// How long an answer may take to arrive after its Route.
    pub ttl_seconds: u64,
    /// A file holding the key tickets are sealed with (at least 32 bytes), the same for every
    /// replica: a Store may reach another replica than its Route. Without one each process makes
    /// its own key, and a Store reaching another replica is refused (`invalid_ticket`).
    pub key_file: Option<PathBuf>,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig { ttl_seconds: 600, key_file: None }
    }
}

/// `cache.store`: what the configuration decides about which answers are stored; the rest of the
/// rules (status 200, no error, a finished completion, ...) always hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The finish reasons an answer's every choice must end with to be stored. `length` (cut
    /// at `max_tokens`) and `content_filter` (withheld) are left out by default: a cache would
    /// serve a partial answer to every later asker. Servers with their own names (TGI's
    /// `eos_token`) may be added.
    pub allow_finish_reasons: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { allow_finish_reasons: ["stop", "tool_calls", "function_call"].map(String::from).to_vec() }
    }
}

/// A size in bytes: an integer, or a string with a binary unit (`64KiB`, `256 MiB`, `1GiB`).
pub fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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


/// A rule for the requests of one category or language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheCategory {
    pub threshold: Option<f32>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

/// The smallest byte bound accepted (an entry or ticket holds a 1.5 KiB vector and bookkeeping).
pub const MIN_BYTES: usize = 4096;
fn enabled() -> bool {
    true
}

impl CacheConfig {
    /// Every problem with this section, each as `cache.<field>: <why>`.
    pub fn check(&self, errors: &mut Vec<String>) {
        let mut check = |ok: bool, msg: String| if !ok { errors.push(format!("cache.{msg}")) };
        check(self.threshold > 0.0 && self.threshold <= 1.0, "threshold: must be in (0, 1]".into());
        check((0.0..=1.0).contains(&self.max_unknown_share), "max_unknown_share: must be between 0 and 1".into());
        check(self.ttl_seconds >= 1, "ttl_seconds: must be at least 1".into());
        check(self.max_entries >= 1, "max_entries: must be at least 1".into());
        // Below a few KiB not even one embedding and its bookkeeping fit.
        check(self.max_entry_bytes >= MIN_BYTES, format!("max_entry_bytes: must be at least {MIN_BYTES}"));
        check(self.max_bytes >= self.max_entry_bytes, "max_bytes: must be at least cache.max_entry_bytes".into());
        check(self.tickets.ttl_seconds >= 1, "tickets.ttl_seconds: must be at least 1".into());
        let reasons = &self.store.allow_finish_reasons;
        check(!reasons.is_empty(), "store.allow_finish_reasons: give at least one finish reason (cache.enabled: false turns the cache off)".into());
        for (i, reason) in reasons.iter().enumerate() {
            check(!reason.trim().is_empty() && reason.trim() == reason, format!("store.allow_finish_reasons[{i}]: must be a finish reason such as stop, not '{reason}'"));
        }
        for (name, cat) in &self.categories {
            if let Some(t) = cat.threshold {
                check(t > 0.0 && t <= 1.0, format!("categories.{name}.threshold: must be in (0, 1]"));
            }
        }
        for (language, rule) in &self.languages {
            if let Some(t) = rule.threshold {
                check(t > 0.0 && t <= 1.0, format!("languages.{language}.threshold: must be in (0, 1]"));
            }
        }
        if let Some(p) = &self.snapshot {
            check(p.file_name().is_some(), format!("snapshot: '{}' is not a file path", p.display()));
        }
        if self.backend == Backend::Milvus {
            let m = &self.milvus;
            check(m.address.starts_with("http://") || m.address.starts_with("https://"), "milvus.address: must be an http:// or https:// URL".into());
            check(!m.collection.is_empty() && m.collection.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'), "milvus.collection: letters, digits and '_' only".into());
            check(m.timeout_ms >= 1, "milvus.timeout_ms: must be at least 1".into());
            check((1..=100).contains(&m.top_k), "milvus.top_k: must be between 1 and 100".into());
            check(m.ef >= m.top_k, "milvus.ef: must be at least top_k".into());
            check(m.cleanup_seconds >= 1, "milvus.cleanup_seconds: must be at least 1".into());
        }
    }

    /// Relative paths are taken from `base` (the directory of the config file).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.snapshot, &mut self.tickets.key_file].into_iter().flatten() {
            *p = base.join(&*p);
        }
    }
}
