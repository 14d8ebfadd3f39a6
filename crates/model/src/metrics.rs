//! The encoder's Prometheus metrics. Unregistered by default (tests); the sidecar registers them
//! with [`EncoderMetrics::register`] beside every other area's.

use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets from 100 µs to ~3 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0].into_iter()
}

/// Cheap to clone; every clone updates the same series.
#[derive(Clone)]
pub struct EncoderMetrics {
    batch_size: Histogram,
    duration: Histogram,
}

impl Default for EncoderMetrics {
    fn default() -> Self {
        EncoderMetrics { batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]), duration: Histogram::new(latency_buckets()) }
    }
}

impl EncoderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("encoder_batch_size", "Prompts per encoder pass", m.batch_size.clone());
        registry.register_with_unit("encoder_duration", "Time of one encoder pass (tokenise + run)", Unit::Seconds, m.duration.clone());
        m
    }

    pub fn observe_batch(&self, size: usize, took: Duration) {
        self.batch_size.observe(size as f64);
        self.duration.observe(took.as_secs_f64());
    }
}
