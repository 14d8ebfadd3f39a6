//! The encoder's Prometheus metrics. Unregistered by default (tests); the sidecar registers them
//! with [`EncoderMetrics::register`] beside every other area's.

use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    queue_depth: Family<[(&'static str, &'static str); 1], Gauge>,
    queue_capacity: Gauge,
}

impl Default for EncoderMetrics {
    fn default() -> Self {
        EncoderMetrics {
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            duration: Histogram::new(latency_buckets()),
            queue_depth: Family::default(),
            queue_capacity: Gauge::default(),
        }
    }
}

impl EncoderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("encoder_batch_size", "Prompts per encoder pass", m.batch_size.clone());
        registry.register_with_unit("encoder_duration", "Time of one encoder pass (tokenise + run)", Unit::Seconds, m.duration.clone());
        registry.register("encoder_queue_depth", "Jobs waiting for the tokeniser, by lane (prompt, window); past model.queue a lane refuses with overload", m.queue_depth.clone());
        registry.register("encoder_queue_capacity", "Jobs each lane of the encoder queue holds before it refuses (model.queue)", m.queue_capacity.clone());
        m
    }

    pub fn observe_batch(&self, size: usize, took: Duration) {
        self.batch_size.observe(size as f64);
        self.duration.observe(took.as_secs_f64());
    }

    /// The gauge of one lane's depth (`lane`: "prompt" or "window"), looked up once and then set
    /// with a plain atomic store wherever the lane changes.
    pub fn queue_depth(&self, lane: &'static str) -> Gauge {
        self.queue_depth.get_or_create(&[("lane", lane)]).clone()
    }

    pub fn queue_capacity(&self, jobs: usize) {
        self.queue_capacity.set(jobs as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_gauges_share_the_registered_series() {
        let mut registry = Registry::with_prefix("vane");
        let m = EncoderMetrics::register(&mut registry);
        m.queue_capacity(64);
        let prompt = m.queue_depth("prompt");
        prompt.set(3);
        m.queue_depth("window").set(7);
        prompt.set(2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for needle in ["vane_encoder_queue_depth{lane=\"prompt\"} 2", "vane_encoder_queue_depth{lane=\"window\"} 7", "vane_encoder_queue_capacity 64"] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
