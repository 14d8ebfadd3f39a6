//! The configured cache backend (`cache.backend`): the sidecar's pipeline calls this, whichever it is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Backend, CacheConfig};
use crate::memory::MemoryCache;
use crate::metrics::CacheMetrics;
use crate::milvus::{MilvusCache, MilvusSettings, consistency_level};
use crate::{CacheError, Fingerprint, Hit, Partition, PromptKey, Selector};

pub enum CacheBackend {
    Memory(Box<MemoryCache>),
    Milvus(Arc<MilvusCache>),
}

impl CacheBackend {
    /// The backend of `config`, returning candidates down to `threshold`; a Milvus one connects
    /// lazily and starts its TTL cleanup task (call inside a Tokio runtime).
    pub fn build(config: &CacheConfig, threshold: f32, dim: usize, metrics: &CacheMetrics) -> CacheBackend {
        let ttl = Duration::from_secs(config.ttl_seconds);
        match config.backend {
            Backend::Memory => {
                let cache = MemoryCache::new(threshold, ttl, config.max_entries).with_eviction(config.eviction).with_max_bytes(config.max_bytes, config.max_entry_bytes);
                CacheBackend::Memory(Box::new(cache.with_metrics(metrics.clone())))
            }
            Backend::Milvus => {
                let m = &config.milvus;
                let settings = MilvusSettings {
                    address: m.address.clone(),
                    collection: m.collection.clone(),
                    consistency: consistency_level(m.consistency),
                    timeout: Duration::from_millis(m.timeout_ms),
                    top_k: m.top_k,
                    ef: m.ef,
                    dim,
                };
                let cache = Arc::new(MilvusCache::new(settings, threshold, ttl, metrics.clone()).with_max_entry_bytes(config.max_entry_bytes));
                cache.spawn_cleanup(Duration::from_secs(m.cleanup_seconds));
                CacheBackend::Milvus(cache)
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CacheBackend::Memory(_) => "memory",
            CacheBackend::Milvus(_) => "milvus",
        }
    }

    /// Candidates are returned down to `threshold` from now on: a reloaded policy's loosest.
    pub fn set_threshold(&self, threshold: f32) {
        match self {
            CacheBackend::Memory(c) => c.set_threshold(threshold),
            CacheBackend::Milvus(c) => c.set_threshold(threshold),
        }
    }

    pub async fn lookup_exact(&self, partition: &Partition, fingerprint: Fingerprint, prompt: PromptKey, now: Instant) -> Option<Hit> {
        match self {
            CacheBackend::Memory(c) => c.lookup_exact(partition, fingerprint, prompt, now),
            CacheBackend::Milvus(c) => c.lookup_exact(partition, fingerprint, prompt, now).await,
        }
    }

    pub async fn lookup(&self, partition: &Partition, fingerprint: Fingerprint, embedding: &[f32], now: Instant, accept: impl FnMut(&str) -> bool) -> Option<Hit> {
        match self {
            CacheBackend::Memory(c) => c.lookup(partition, fingerprint, embedding, now, accept),
            CacheBackend::Milvus(c) => c.lookup(partition, fingerprint, embedding, now, accept).await,
        }
    }

    /// Stores an answer. Without an embedding the entry serves the exact tier only.
    pub async fn insert(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Option<Vec<f32>>, completion: Vec<u8>, now: Instant) -> Result<(), CacheError> {
        match self {
            CacheBackend::Memory(c) => c.insert_entry(partition, fingerprint, text, embedding.as_deref(), completion, now).map(|_| ()).ok_or(CacheError::TooLarge),
            // Every Milvus row has a vector: the zero vector's inner product with any query is
            // 0, below every threshold, so such a row answers the exact tier only.
            CacheBackend::Milvus(c) => c.insert(partition, fingerprint, text, embedding.unwrap_or_else(|| vec![0.0; c.dim()]), completion, now).await,
        }
    }

    /// What the cache holds: everything for the embedded backend; for Milvus the live entries
    /// (one `count(*)` query; groups, tenants and bytes would need a scan).
    pub async fn stats(&self) -> Result<serde_json::Value, CacheError> {
        match self {
            CacheBackend::Memory(c) => serde_json::to_value(c.stats()).map_err(|e| CacheError::Backend(e.to_string())),
            CacheBackend::Milvus(c) => c.count(Instant::now()).await.map(|entries| serde_json::json!({"entries": entries})),
        }
    }

    /// Removes what the selector matches (everything for an empty one); returns how many.
    pub async fn invalidate(&self, selector: &Selector) -> Result<usize, CacheError> {
        match self {
            CacheBackend::Memory(c) => Ok(c.invalidate(selector)),
            CacheBackend::Milvus(c) => c.invalidate(selector).await,
        }
    }

    /// Entries held, where that is cheap to know (not for Milvus: a count is a query).
    pub fn entries(&self) -> Option<usize> {
        match self {
            CacheBackend::Memory(c) => Some(c.len()),
            CacheBackend::Milvus(_) => None,
        }
    }
}
