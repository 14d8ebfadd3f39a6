//! Prometheus metrics: every area's families in one registry, served on the admin port. The
//! cache's and the encoder's are defined in their crates ([`CacheMetrics`], [`EncoderMetrics`]);
//! the pipeline's (routes, safety, tickets, config reloads) here.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use vane_cache::metrics::CacheMetrics;
use vane_model::metrics::{EncoderMetrics, latency_buckets};

type Label = [(&'static str, &'static str); 1];

/// Cheap to clone; every clone updates the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub cache: CacheMetrics,
    pub encoder: EncoderMetrics,
    route_decisions: Family<Label, Counter>,
    route_duration: Histogram,
    route_errors: Family<Label, Counter>,
    tickets_dropped: Family<Label, Counter>,
    safety_decisions: Family<[(&'static str, &'static str); 2], Counter>,
    pii_findings: Family<Label, Counter>,
    trace_spans_dropped: Family<Label, Counter>,
    config_reloads: Family<Label, Counter>,
    conversations: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vane");
        let route_decisions = Family::<Label, Counter>::default();
        registry.register("route_decisions", "Route decisions by kind (forward, cached, block)", route_decisions.clone());
        let route_duration = Histogram::new(latency_buckets());
        registry.register_with_unit("route_duration", "Time to answer one Route call", Unit::Seconds, route_duration.clone());
        let route_errors = Family::<Label, Counter>::default();
        registry.register("route_errors", "Route calls answered with an error, by reason (overloaded, stopped, model, too_large); the filter fails open on each", route_errors.clone());
        let cache = CacheMetrics::register(&mut registry);
        let tickets_dropped = Family::<Label, Counter>::default();
        registry.register("tickets_dropped", "Tickets not issued, by reason (too_large: over cache.max_entry_bytes, the answer could never be stored)", tickets_dropped.clone());
        let encoder = EncoderMetrics::register(&mut registry);
        let safety_decisions = Family::default();
        registry.register("safety_decisions", "Requests a safety signal acted on, by signal (pii, jailbreak) and action", safety_decisions.clone());
        let pii_findings = Family::<Label, Counter>::default();
        registry.register("pii_findings", "PII found in requests, by type (counts only; text is never logged)", pii_findings.clone());
        let trace_spans_dropped = Family::<Label, Counter>::default();
        registry.register("trace_spans_dropped", "Spans not exported, by reason (queue_full: the export queue, tracing.max_queue, was full; export_failed: the collector refused or did not answer)", trace_spans_dropped.clone());
        let config_reloads = Family::<Label, Counter>::default();
        registry.register("config_reloads", "Configuration reloads (SIGHUP or a changed file), by result (applied, unchanged, invalid, needs_restart: nothing applied)", config_reloads.clone());
        let conversations = Gauge::default();
        registry.register("conversations", "Conversations the multi-turn memory holds, after the last one routed (bounded by routing.multi_turn.max_conversations)", conversations.clone());
        Metrics { registry: Arc::new(registry), cache, encoder, route_decisions, route_duration, route_errors, tickets_dropped, safety_decisions, pii_findings, trace_spans_dropped, config_reloads, conversations }
    }
}

/// The trace exporter's parts are `Debug` and hold a clone; the values are on /metrics.
impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn route(&self, decision: &'static str, took: Duration) {
        self.route_decisions.get_or_create(&[("decision", decision)]).inc();
        self.route_duration.observe(took.as_secs_f64());
    }

    /// A Route answered with an error status instead of a decision (not in `route_duration`).
    pub fn route_error(&self, reason: &'static str) {
        self.route_errors.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn safety(&self, signal: &'static str, action: &'static str) {
        self.safety_decisions.get_or_create(&[("signal", signal), ("action", action)]).inc();
    }

    pub fn pii_found(&self, kind: &'static str, count: usize) {
        self.pii_findings.get_or_create(&[("type", kind)]).inc_by(count as u64);
    }

    pub fn ticket_dropped(&self, reason: &'static str) {
        self.tickets_dropped.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn spans_dropped(&self, reason: &'static str, count: usize) {
        self.trace_spans_dropped.get_or_create(&[("reason", reason)]).inc_by(count as u64);
    }

    /// The multi-turn memory's size after a conversation was remembered.
    pub fn conversations(&self, remembered: usize) {
        self.conversations.set(remembered as i64);
    }

    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads.get_or_create(&[("result", result)]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
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
        m.route_error("overloaded");
        m.cache.lookup("memory", "exact", "hit", Duration::from_micros(3));
        m.cache.store("stored", Some(3));
        m.encoder.observe_batch(4, Duration::from_millis(1));
        m.cache.set_bytes(4096);
        m.ticket_dropped("too_large");
        m.spans_dropped("queue_full", 2);
        m.config_reload("invalid");
        m.conversations(7);
        let text = m.render();
        for needle in [
            "vane_route_decisions_total{decision=\"forward\"} 1",
            "# UNIT vane_route_duration_seconds seconds",
            "vane_route_errors_total{reason=\"overloaded\"} 1",
            "vane_cache_lookups_total{backend=\"memory\",tier=\"exact\",result=\"hit\"} 1",
            "vane_cache_lookup_duration_seconds_bucket{le=\"0.000005\",backend=\"memory\",tier=\"exact\"} 1",
            "vane_cache_entries 3",
            "vane_encoder_batch_size_count 1",
            "# UNIT vane_cache_bytes bytes",
            "vane_cache_bytes 4096",
            "vane_tickets_dropped_total{reason=\"too_large\"} 1",
            "vane_trace_spans_dropped_total{reason=\"queue_full\"} 2",
            "vane_config_reloads_total{result=\"invalid\"} 1",
            "vane_conversations 7",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
