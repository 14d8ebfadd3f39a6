//! The tracer provider: OTLP over gRPC or HTTP behind the SDK's batch span processor, whose
//! worker thread exports while requests go on. Its queue is bounded, and a span that finds it
//! full is dropped; the SDK only counts those internally, so [`CountedQueue`] keeps the count
//! itself (in front of the processor) and the exporter reports failed batches:
//! `vane_trace_spans_dropped_total{reason}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};

use super::config::{Protocol, TracingConfig};
use crate::metrics::Metrics;

/// Builds the provider; spans flow once it is installed ([`super::init`]). Must run inside a
/// Tokio runtime (the gRPC exporter's channel lives on it).
pub fn provider(config: &TracingConfig, metrics: &Metrics) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match config.protocol {
        Protocol::Grpc => exporter.with_tonic().with_endpoint(config.url()).build()?,
        // reqwest's blocking client: the batch worker is a plain thread, not a Tokio task.
        Protocol::Http => exporter.with_http().with_endpoint(config.url()).build()?,
    };
    Ok(with_exporter(exporter, config, metrics))
}

/// The provider over any exporter (tests use an in-memory one).
pub fn with_exporter(exporter: impl SpanExporter + 'static, config: &TracingConfig, metrics: &Metrics) -> SdkTracerProvider {
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = CountedExport { inner: exporter, queued: queued.clone(), metrics: metrics.clone() };
    // The SDK's queue is as large as ours, so only ours ever turns a span away.
    let batch = BatchConfigBuilder::default().with_max_queue_size(config.max_queue).build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    let processor = CountedQueue { inner: processor, queued, capacity: config.max_queue, metrics: metrics.clone() };
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        // A client's sampling decision is kept; new traces are sampled by trace id.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio))))
        .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
        .build()
}

/// Admits a finished span to the batch processor while fewer than `capacity` wait for export.
#[derive(Debug)]
struct CountedQueue {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet given to the exporter.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    metrics: Metrics,
}

impl SpanProcessor for CountedQueue {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.spans_dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, freeing queue room as batches leave and counting the spans of failed batches.
#[derive(Debug)]
struct CountedExport<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl<E: SpanExporter> SpanExporter for CountedExport<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        self.queued.fetch_sub(n, Ordering::Relaxed);
        let sent = self.inner.export(batch);
        let metrics = self.metrics.clone();
        async move {
            let result = sent.await;
            if result.is_err() {
                metrics.spans_dropped("export_failed", n);
            }
            result
        }
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkError;

    use super::*;

    /// A collector that takes `delay` to answer each batch, or refuses it.
    #[derive(Debug)]
    struct Collector {
        delay: Duration,
        refuse: bool,
    }

    impl SpanExporter for Collector {
        fn export(&self, _batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            std::thread::sleep(self.delay);
            let refuse = self.refuse;
            async move { if refuse { Err(OTelSdkError::InternalFailure("refused".into())) } else { Ok(()) } }
        }
    }

    fn dropped(metrics: &Metrics, reason: &str) -> u64 {
        let needle = format!("vane_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
        metrics.render().lines().find_map(|l| l.strip_prefix(&needle)).map_or(0, |n| n.parse().unwrap())
    }

    #[test]
    fn a_slow_collector_drops_spans_and_counts_them_without_slowing_anyone() {
        let metrics = Metrics::default();
        let config = TracingConfig { max_queue: 4, ..Default::default() };
        let provider = with_exporter(Collector { delay: Duration::from_millis(300), refuse: false }, &config, &metrics);
        let tracer = provider.tracer("test");
        let started = Instant::now();
        for _ in 0..100 {
            tracer.in_span("request", |_| {});
        }
        assert!(started.elapsed() < Duration::from_millis(100), "ending spans waited for the collector: {:?}", started.elapsed());
        let lost = dropped(&metrics, "queue_full");
        // Kept: at most the queue's 4 plus the batch (capped at the queue's size) the exporter
        // took out before the 100 were ended, and is still holding for 300 ms.
        assert!((92..=100).contains(&lost), "at most 4 queued + 4 in export kept; {lost} dropped");
        drop(provider);
    }

    #[test]
    fn spans_of_a_refused_batch_are_counted() {
        let metrics = Metrics::default();
        let provider = with_exporter(Collector { delay: Duration::ZERO, refuse: true }, &TracingConfig::default(), &metrics);
        let tracer = provider.tracer("test");
        for _ in 0..3 {
            tracer.in_span("request", |_| {});
        }
        let _ = provider.force_flush();
        assert_eq!(dropped(&metrics, "export_failed"), 3);
        assert_eq!(dropped(&metrics, "queue_full"), 0);
    }
}
