//! The cache's Prometheus metrics. Unregistered by default (tests); the sidecar registers them
//! with [`CacheMetrics::register`] beside every other area's.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Cache lookups: from 5 µs (an exact hit in memory) to 250 ms (a slow remote backend).
fn lookup_buckets() -> impl Iterator<Item = f64> {
    [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25].into_iter()
}

/// Cheap to clone; every clone updates the same series.
#[derive(Clone)]
pub struct CacheMetrics {
    lookups: Family<Labels<3>, Counter>,
    lookup_duration: Family<Labels<2>, Histogram>,
    stores: Family<Labels<1>, Counter>,
    guard_rejections: Family<Labels<1>, Counter>,
    entries: Gauge,
    bytes: Gauge,
    invalidated: Counter,
    errors: Family<Labels<2>, Counter>,
    breaker_open: Family<Labels<1>, Gauge>,
    breaker_transitions: Family<Labels<2>, Counter>,
    breaker_skipped: Family<Labels<2>, Counter>,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        CacheMetrics {
            lookups: Family::default(),
            lookup_duration: Family::new_with_constructor(|| Histogram::new(lookup_buckets())),
            stores: Family::default(),
            guard_rejections: Family::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            invalidated: Counter::default(),
            errors: Family::default(),
            breaker_open: Family::default(),
            breaker_transitions: Family::default(),
            breaker_skipped: Family::default(),
        }
    }
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("cache_lookups", "Cache lookups by backend, tier (exact, semantic) and result (hit, miss, error)", m.lookups.clone());
        registry.register_with_unit("cache_lookup_duration", "Time of one cache lookup by backend and tier (the guard included)", Unit::Seconds, m.lookup_duration.clone());
        registry.register("cache_stores", "Store calls by result (stored, or why not)", m.stores.clone());
        registry.register("cache_guard_rejections", "Semantic matches refused by the near-duplicate guard, by reason", m.guard_rejections.clone());
        registry.register("cache_entries", "Entries in the semantic cache", m.entries.clone());
        registry.register_with_unit("cache", "Estimated memory of the embedded cache's entries (prompt, answer, vector, bookkeeping); bounded by cache.max_bytes", Unit::Bytes, m.bytes.clone());
        registry.register("cache_invalidated", "Entries removed through the admin API (invalidate, flush)", m.invalidated.clone());
        registry.register("cache_errors", "Cache backend errors by backend and operation (answered as misses / skipped stores)", m.errors.clone());
        registry.register("cache_breaker_open", "1 while the backend's circuit breaker is open or half-open (calls are not made: lookups miss, stores are skipped)", m.breaker_open.clone());
        registry.register("cache_breaker_transitions", "Circuit breaker state changes by backend and state entered (open, half_open, closed)", m.breaker_transitions.clone());
        registry.register("cache_breaker_skipped", "Backend calls not made because the circuit breaker was open, by backend and operation", m.breaker_skipped.clone());
        m
    }

    /// `result`: "hit", "miss" or "error" (an error is served as a miss), or why the tier was
    /// not asked (e.g. "unknown_tokens").
    pub fn lookup(&self, backend: &'static str, tier: &'static str, result: &'static str, took: Duration) {
        self.lookups.get_or_create(&[("backend", backend), ("tier", tier), ("result", result)]).inc();
        self.lookup_duration.get_or_create(&[("backend", backend), ("tier", tier)]).observe(took.as_secs_f64());
    }

    pub fn guard_rejection(&self, reason: &'static str) {
        self.guard_rejections.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn invalidated(&self, removed: usize, entries: Option<usize>) {
        self.invalidated.inc_by(removed as u64);
        if let Some(n) = entries {
            self.entries.set(n as i64);
        }
    }

    /// Milvus's live entries, counted after each TTL cleanup.
    pub fn entries(&self, entries: usize) {
        self.entries.set(entries as i64);
    }

    /// `entries` when the backend knows its size cheaply (the embedded one; not Milvus).
    pub fn store(&self, result: &'static str, entries: Option<usize>) {
        self.stores.get_or_create(&[("result", result)]).inc();
        if let Some(entries) = entries {
            self.entries.set(entries as i64);
        }
    }

    /// The embedded cache's estimated bytes, after each change.
    pub fn set_bytes(&self, bytes: usize) {
        self.bytes.set(bytes as i64);
    }

    /// The gauge's value (tests).
    pub fn bytes(&self) -> i64 {
        self.bytes.get()
    }

    pub fn error(&self, backend: &'static str, op: &'static str) {
        self.errors.get_or_create(&[("backend", backend), ("op", op)]).inc();
    }

    /// The backend's circuit breaker entered `to` (open, half_open, closed).
    pub fn breaker(&self, backend: &'static str, to: &'static str) {
        self.breaker_transitions.get_or_create(&[("backend", backend), ("to", to)]).inc();
        self.breaker_open.get_or_create(&[("backend", backend)]).set(i64::from(to != "closed"));
    }

    /// A call not made: the circuit was open.
    pub fn breaker_skipped(&self, backend: &'static str, op: &'static str) {
        self.breaker_skipped.get_or_create(&[("backend", backend), ("op", op)]).inc();
    }
}

/// Cache metrics in a registry of their own, for tests and benchmarks that read them back.
pub struct Standalone {
    registry: Registry,
    pub metrics: CacheMetrics,
}

impl Default for Standalone {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vane");
        let metrics = CacheMetrics::register(&mut registry);
        Standalone { registry, metrics }
    }
}

impl Standalone {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
