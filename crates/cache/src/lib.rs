//! The semantic cache: answers keyed by the meaning of the prompt, inside hard boundaries.
//!
//! An entry can only match a request with the same [`Partition`] (tenant and requested model)
//! and the same [`Fingerprint`] (hash of everything but the prompt: system prompt, earlier
//! turns, tools, sampling parameters). Within that, an identical prompt ([`PromptKey`]) is
//! answered by the exact tier without running the encoder; otherwise the prompt embeddings
//! must reach the similarity threshold.

pub mod backend;
pub mod breaker;
pub mod config;
pub mod eviction;
pub mod guard;
pub mod index;
pub mod memory;
pub mod metrics;
pub mod milvus;
pub mod policy;
pub mod snapshot;

use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why a store, a count or an invalidation did not happen. Lookups never fail a request: their
/// errors are counted (`vane_cache_errors_total`) and answered as misses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Over `cache.max_entry_bytes` (or Milvus's VARCHAR limit): never stored.
    #[error("the entry is larger than the cache stores")]
    TooLarge,
    /// The Milvus backend stores answers as text.
    #[error("the answer is not UTF-8")]
    NotUtf8,
    /// The backend failed or timed out (already counted and logged).
    #[error("cache backend: {0}")]
    Backend(String),
}

impl CacheError {
    /// The Store reply's reason and the `vane_cache_stores_total{result}` label.
    pub fn reason(&self) -> &'static str {
        match self {
            CacheError::TooLarge => "too_large",
            CacheError::NotUtf8 => "not_utf8",
            CacheError::Backend(_) => "backend_error",
        }
    }
}

/// Hard boundary: nothing crosses it, whatever the similarity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    pub tenant: String,
    pub model: String,
}

/// Hash of the request's context (see the filter's `request` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(context: &str) -> Fingerprint {
        Fingerprint(Sha256::digest(context.as_bytes()).into())
    }

    /// The fingerprint of a context under a configuration epoch: entries written under another
    /// configuration never match.
    pub fn within(epoch: &str, context: &str) -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(epoch.as_bytes());
        hasher.update([0]);
        hasher.update(context.as_bytes());
        Fingerprint(hasher.finalize().into())
    }

    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }
}

/// Hash of the prompt with whitespace normalised (runs collapsed, ends trimmed): the exact
/// tier's key. Case and punctuation are kept: they can change the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromptKey([u8; 32]);

impl PromptKey {
    pub fn of(prompt: &str) -> PromptKey {
        let mut hasher = Sha256::new();
        for (i, word) in prompt.split_whitespace().enumerate() {
            if i > 0 {
                hasher.update(b" ");
            }
            hasher.update(word.as_bytes());
        }
        PromptKey(hasher.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Which entries an invalidation removes: those matching every field given.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// An entry id (`x-vane-cache-entry` on a hit).
    #[serde(default, deserialize_with = "id_from_string_or_number")]
    pub id: Option<u64>,
    /// A tenant as the filter derives it (`h:<header value>` or `k:<credential hash>`).
    pub tenant: Option<String>,
    /// The model the client asked for (`auto`, or a model name).
    pub model: Option<String>,
    /// The prompt text (whitespace aside, as the exact tier compares).
    pub prompt: Option<String>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        *self == Selector::default()
    }

    pub fn matches(&self, id: u64, partition: &Partition, prompt: PromptKey) -> bool {
        self.id.is_none_or(|x| x == id)
            && self.tenant.as_ref().is_none_or(|t| *t == partition.tenant)
            && self.model.as_ref().is_none_or(|m| *m == partition.model)
            && self.prompt.as_ref().is_none_or(|p| PromptKey::of(p) == prompt)
    }
}

fn id_from_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }
    match Option::<Id>::deserialize(d)? {
        None => Ok(None),
        Some(Id::Number(n)) => Ok(Some(n)),
        Some(Id::Text(t)) => t.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("id: '{t}' is not an entry id"))),
    }
}

/// Bookkeeping per cache entry beyond its payload (the entry itself, its slots in the exact
/// map, the expiry and eviction sets, the index row's id): a rough, fixed estimate.
const ENTRY_OVERHEAD: usize = 256;

/// The estimated memory of one entry: prompt, answer, vector (f32), the partition (kept twice)
/// and [`ENTRY_OVERHEAD`]. What `cache.max_bytes` and `cache.max_entry_bytes` bound.
pub fn entry_bytes(partition: &Partition, prompt: usize, completion: usize, dim: usize) -> usize {
    prompt + completion + dim * size_of::<f32>() + 2 * (partition.tenant.len() + partition.model.len()) + ENTRY_OVERHEAD
}

/// What the cache holds, for the admin API.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    pub entries: usize,
    /// Distinct (tenant, model, rest of the conversation) groups.
    pub groups: usize,
    pub tenants: usize,
    /// Bytes of prompt texts and answers (vectors and index not counted).
    pub payload_bytes: usize,
    /// Estimated memory of the entries ([`entry_bytes`]), what `cache.max_bytes` bounds.
    pub bytes: usize,
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Exact,
    Semantic,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Exact => "exact",
            Tier::Semantic => "semantic",
        }
    }
}

/// A cached answer that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub tier: Tier,
    pub id: u64,
    pub completion: Vec<u8>,
    pub similarity: f32,
}

/// The lowest similarity a backend returns candidates down to: the loosest threshold of the
/// cache policy, which a configuration reload may change while lookups run.
pub(crate) struct Floor(AtomicU32);

impl Floor {
    pub(crate) fn new(threshold: f32) -> Floor {
        Floor(AtomicU32::new(threshold.to_bits()))
    }

    pub(crate) fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, threshold: f32) {
        self.0.store(threshold.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_keys_ignore_whitespace_only() {
        assert_eq!(PromptKey::of("What is  2+2?\n"), PromptKey::of(" What is 2+2?"));
        assert_ne!(PromptKey::of("What is 2+2?"), PromptKey::of("what is 2+2?"));
        assert_ne!(PromptKey::of("a b"), PromptKey::of("ab"));
    }
}
