//! Admin HTTP: Prometheus metrics, health, `POST /v1/classify` and the cache's admin API
//! (`/v1/cache/stats|invalidate|flush`). Bound to loopback by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::api::{cache, classify};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    /// True once the model is warm and the gRPC server accepts calls.
    pub ready: Arc<AtomicBool>,
}

pub fn routes(state: AdminState, pipeline: Arc<Pipeline>) -> Router {
    let api = Router::new()
        .route("/v1/classify", post(classify::classify))
        .route("/v1/cache/stats", get(cache::stats))
        .route("/v1/cache/invalidate", post(cache::invalidate))
        .route("/v1/cache/flush", post(cache::flush))
        .with_state(pipeline);
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
        .merge(api)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting\n") }
}
