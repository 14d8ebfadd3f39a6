//! What the sidecar tells operators besides metrics: traces over OTLP ([`config`] is the
//! `tracing:` section, [`export`] the provider, [`spans`] the request spans) and logs, as text
//! or, with `VANE_LOG_FORMAT=json`, JSON lines; both carry the trace id of the request a line
//! was logged for.

pub mod config;
pub mod export;
pub mod spans;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::prelude::*;

use crate::metrics::Metrics;
use config::TracingConfig;

/// The installed telemetry; [`Telemetry::shutdown`] exports what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs logging, and trace export when `traces` says so (`None`: the configuration did not
/// load; log its errors). Call it once, inside the Tokio runtime. A collector that cannot be
/// set up is an error, after logging is installed to report it.
pub fn init(traces: Option<&TracingConfig>, metrics: &Metrics) -> Result<Telemetry, opentelemetry_otlp::ExporterBuildError> {
    let provider = traces.filter(|t| t.enabled).map(|t| export::provider(t, metrics)).transpose();
    let installed = provider.as_ref().ok().and_then(Option::as_ref);
    let log_filter = EnvFilter::try_from_env("VANE_LOG").unwrap_or_else(|_| "info".into());
    let format = std::env::var("VANE_LOG_FORMAT").unwrap_or_default();
    let json = format.eq_ignore_ascii_case("json");
    let logs = if json {
        // Each line a JSON object; `spans` lists the spans it was logged in, `Route` with its trace id.
        tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).with_span_list(true).with_target(false).boxed()
    } else {
        // Colours only on a terminal: container logs and files get plain text.
        tracing_subscriber::fmt::layer().with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).boxed()
    };
    // Spans only: events may hold text (prompts at debug level) and stay in the logs. No source
    // locations, thread ids or busy/idle times: attributes a reader of the trace does not need.
    let traces = installed.map(|p| {
        let layer = tracing_opentelemetry::layer().with_tracer(p.tracer("vane-sidecar")).with_location(false).with_threads(false).with_tracked_inactivity(false);
        layer.with_filter(filter_fn(|m| m.is_span() && m.target().starts_with("vane_")))
    });
    tracing_subscriber::registry().with(logs.with_filter(log_filter)).with(traces).init();
    if !(json || format.is_empty() || format.eq_ignore_ascii_case("text")) {
        tracing::warn!(format, "VANE_LOG_FORMAT is text or json; logging text");
    }
    if let Some(p) = installed {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(Telemetry { provider: provider? })
}

impl Telemetry {
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued (waits for the collector up to the export timeout).
    /// Blocking: call it off the Tokio workers.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not shut down cleanly");
        }
    }
}
