//! Prometheus metrics, defined once here with help text and units, served on the admin port.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Label = [(&'static str, &'static str); 1];

/// Cache lookups: from 5 µs (an exact hit in memory) to 250 ms (a slow remote backend).
fn lookup_buckets() -> impl Iterator<Item = f64> {
    [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25].into_iter()
}

/// Latency buckets from 100 µs to ~3 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0].into_iter()
}

struct Inner {
    registry: Registry,
    route_decisions: Family<Label, Counter>,
    route_duration: Histogram,
    cache_lookups: Family<[(&'static str, &'static str); 3], Counter>,
    cache_lookup_duration: Family<[(&'static str, &'static str); 2], Histogram>,
    cache_stores: Family<Label, Counter>,
    guard_rejections: Family<Label, Counter>,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    tickets: Gauge,
    tickets_bytes: Gauge,
    tickets_dropped: Family<Label, Counter>,
    cache_invalidated: Counter,
    cache_errors: Family<[(&'static str, &'static str); 2], Counter>,
    encoder_batch_size: Histogram,
    encoder_duration: Histogram,
    safety_decisions: Family<[(&'static str, &'static str); 2], Counter>,
    pii_findings: Family<Label, Counter>,
}

/// Cheap to clone; every clone updates the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vane");
        let route_decisions = Family::<Label, Counter>::default();
        registry.register("route_decisions", "Route decisions by kind (forward, cached, block)", route_decisions.clone());
        let route_duration = Histogram::new(latency_buckets());
        registry.register_with_unit("route_duration", "Time to answer one Route call", Unit::Seconds, route_duration.clone());
        let cache_lookups = Family::default();
        registry.register("cache_lookups", "Cache lookups by backend, tier (exact, semantic) and result (hit, miss, error)", cache_lookups.clone());
        let cache_lookup_duration = Family::<[(&'static str, &'static str); 2], Histogram>::new_with_constructor(|| Histogram::new(lookup_buckets()));
        registry.register_with_unit("cache_lookup_duration", "Time of one cache lookup by backend and tier (the guard included)", Unit::Seconds, cache_lookup_duration.clone());
        let cache_stores = Family::<Label, Counter>::default();
        registry.register("cache_stores", "Store calls by result (stored, or why not)", cache_stores.clone());
        let guard_rejections = Family::<Label, Counter>::default();
        registry.register("cache_guard_rejections", "Semantic matches refused by the near-duplicate guard, by reason", guard_rejections.clone());
        let cache_entries = Gauge::default();
        registry.register("cache_entries", "Entries in the semantic cache", cache_entries.clone());
        let cache_bytes = Gauge::default();
        registry.register_with_unit("cache", "Estimated memory of the embedded cache's entries (prompt, answer, vector, bookkeeping); bounded by cache.max_bytes", Unit::Bytes, cache_bytes.clone());
        let tickets = Gauge::default();
        registry.register("tickets", "Pending tickets: Route results kept until their answer is stored or released", tickets.clone());
        let tickets_bytes = Gauge::default();
        registry.register_with_unit("tickets", "Estimated memory of the pending tickets (prompt, vector, bookkeeping); bounded by cache.tickets.max_bytes", Unit::Bytes, tickets_bytes.clone());
        let tickets_dropped = Family::<Label, Counter>::default();
        registry.register("tickets_dropped", "Tickets dropped unredeemed, by reason (released, expired, evicted to stay in bounds, too_large: never issued)", tickets_dropped.clone());
        let cache_invalidated = Counter::default();
        registry.register("cache_invalidated", "Entries removed through the admin API (invalidate, flush)", cache_invalidated.clone());
        let cache_errors = Family::default();
        registry.register("cache_errors", "Cache backend errors by backend and operation (answered as misses / skipped stores)", cache_errors.clone());
        let encoder_batch_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);
        registry.register("encoder_batch_size", "Prompts per encoder pass", encoder_batch_size.clone());
        let encoder_duration = Histogram::new(latency_buckets());
        registry.register_with_unit("encoder_duration", "Time of one encoder pass (tokenise + run)", Unit::Seconds, encoder_duration.clone());
        let safety_decisions = Family::default();
        registry.register("safety_decisions", "Requests a safety signal acted on, by signal (pii, jailbreak) and action", safety_decisions.clone());
        let pii_findings = Family::<Label, Counter>::default();
        registry.register("pii_findings", "PII found in requests, by type (counts only; text is never logged)", pii_findings.clone());
        Metrics(Arc::new(Inner {
            registry,
            route_decisions,
            route_duration,
            cache_lookups,
            cache_lookup_duration,
            cache_stores,
            guard_rejections,
            cache_entries,
            cache_bytes,
            tickets,
            tickets_bytes,
            tickets_dropped,
            cache_invalidated,
            cache_errors,
            encoder_batch_size,
            encoder_duration,
            safety_decisions,
            pii_findings,
        }))
    }
}

impl Metrics {
    pub fn route(&self, decision: &'static str, took: Duration) {
        self.0.route_decisions.get_or_create(&[("decision", decision)]).inc();
        self.0.route_duration.observe(took.as_secs_f64());
    }

    pub fn safety(&self, signal: &'static str, action: &'static str) {
        self.0.safety_decisions.get_or_create(&[("signal", signal), ("action", action)]).inc();
    }

    pub fn pii_found(&self, kind: &'static str, count: usize) {
        self.0.pii_findings.get_or_create(&[("type", kind)]).inc_by(count as u64);
    }

    /// `result`: "hit", "miss" or "error" (an error is served as a miss).
    pub fn cache_lookup(&self, backend: &'static str, tier: &'static str, result: &'static str, took: Duration) {
        self.0.cache_lookups.get_or_create(&[("backend", backend), ("tier", tier), ("result", result)]).inc();
        self.0.cache_lookup_duration.get_or_create(&[("backend", backend), ("tier", tier)]).observe(took.as_secs_f64());
    }

    pub fn guard_rejection(&self, reason: &'static str) {
        self.0.guard_rejections.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn cache_invalidated(&self, removed: usize, entries: Option<usize>) {
        self.0.cache_invalidated.inc_by(removed as u64);
        if let Some(n) = entries {
            self.0.cache_entries.set(n as i64);
        }
    }

    /// Milvus's live entries, counted after each TTL cleanup.
    pub fn cache_entries(&self, entries: usize) {
        self.0.cache_entries.set(entries as i64);
    }

    /// `entries` when the backend knows its size cheaply (the embedded one; not Milvus).
    pub fn cache_store(&self, result: &'static str, entries: Option<usize>) {
        self.0.cache_stores.get_or_create(&[("result", result)]).inc();
        if let Some(entries) = entries {
            self.0.cache_entries.set(entries as i64);
        }
    }

    /// The embedded cache's estimated bytes, after each change.
    pub fn cache_bytes(&self, bytes: usize) {
        self.0.cache_bytes.set(bytes as i64);
    }

    pub fn tickets(&self, count: usize, bytes: usize) {
        self.0.tickets.set(count as i64);
        self.0.tickets_bytes.set(bytes as i64);
    }

    pub fn ticket_dropped(&self, reason: &'static str) {
        self.0.tickets_dropped.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn cache_error(&self, backend: &'static str, op: &'static str) {
        self.0.cache_errors.get_or_create(&[("backend", backend), ("op", op)]).inc();
    }

    pub fn observe_batch(&self, size: usize, took: Duration) {
        self.0.encoder_batch_size.observe(size as f64);
        self.0.encoder_duration.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.0.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_units() {
        let m = Metrics::default();
        m.route("forward", Duration::from_millis(2));
        m.cache_lookup("memory", "exact", "hit", Duration::from_micros(3));
        m.cache_store("stored", Some(3));
        m.observe_batch(4, Duration::from_millis(1));
        m.cache_bytes(4096);
        m.tickets(2, 3000);
        m.ticket_dropped("released");
        let text = m.render();
        for needle in [
            "vane_route_decisions_total{decision=\"forward\"} 1",
            "# UNIT vane_route_duration_seconds seconds",
            "vane_cache_lookups_total{backend=\"memory\",tier=\"exact\",result=\"hit\"} 1",
            "vane_cache_lookup_duration_seconds_bucket{le=\"0.000005\",backend=\"memory\",tier=\"exact\"} 1",
            "vane_cache_entries 3",
            "vane_encoder_batch_size_count 1",
            "# UNIT vane_cache_bytes bytes",
            "vane_cache_bytes 4096",
            "vane_tickets 2",
            "# UNIT vane_tickets_bytes bytes",
            "vane_tickets_bytes 3000",
            "vane_tickets_dropped_total{reason=\"released\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
