//! The gRPC face of the sidecar (`vane.v1.Sidecar`), and where errors become gRPC statuses.
//!
//! What one call may carry is capped (`server.max_route_bytes`, `server.max_store_bytes`): the
//! decoding limit sits just above the larger cap, so tonic itself refuses anything far beyond
//! it before allocating, and an oversized Route gets our own OUT_OF_RANGE with the numbers
//! (tonic also answers OUT_OF_RANGE for a message over its limit; the filter fails open on both).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use vane_model::batching::EmbedError;
use vane_proto::v1::sidecar_server::{Sidecar, SidecarServer};
use vane_proto::v1::{ReleaseReply, ReleaseRequest, RouteDecision, RouteRequest, StoreReply, StoreRequest};

use crate::pipeline::Pipeline;
use crate::telemetry::spans;

pub struct GrpcService {
    pipeline: Arc<Pipeline>,
    max_route_bytes: usize,
}

impl GrpcService {
    /// The service with the pipeline's configured caps (`server.*`).
    pub fn new(pipeline: Arc<Pipeline>) -> SidecarServer<GrpcService> {
        let (max_route_bytes, max_message_bytes) = (pipeline.rpc_limits().max_route_bytes, pipeline.max_message_bytes());
        SidecarServer::new(GrpcService { pipeline, max_route_bytes }).max_decoding_message_size(max_message_bytes)
    }
}

/// Overload maps to RESOURCE_EXHAUSTED, which the filter treats as "fail open".
fn status_of(e: EmbedError) -> Status {
    match e {
        EmbedError::Overloaded => Status::resource_exhausted(e.to_string()),
        EmbedError::Stopped => Status::unavailable(e.to_string()),
        EmbedError::Model(m) => Status::internal(m.to_string()),
    }
}

/// The `vane_route_errors_total` reason of an error.
fn reason_of(e: &EmbedError) -> &'static str {
    match e {
        EmbedError::Overloaded => "overloaded",
        EmbedError::Stopped => "stopped",
        EmbedError::Model(_) => "model",
    }
}

/// A Route over the cap: refused before any work (the prompt would be embedded, kept in a
/// ticket and perhaps cached).
fn oversized(req: &RouteRequest, max: usize) -> Option<Status> {
    let size = req.prompt.len() + req.context.len();
    if size <= max {
        return None;
    }
    info!(request_id = %req.request_id, size, max, "route refused: too large");
    Some(Status::out_of_range(format!("prompt and context are {size} bytes; this sidecar routes at most {max} (server.max_route_bytes)")))
}

/// Marks a Route span that answered an error: the filter forwards that request unrouted
/// (`vane.fallback`), and `vane.error` is the `vane_route_errors_total` reason.
fn failed(span: &tracing::Span, reason: &'static str, status: &Status) {
    span.set_attribute("vane.error", reason);
    span.set_attribute("vane.fallback", true);
    span.set_status(opentelemetry::trace::Status::error(status.message().to_string()));
}

#[tonic::async_trait]
impl Sidecar for GrpcService {
    async fn route(&self, request: Request<RouteRequest>) -> Result<Response<RouteDecision>, Status> {
        let span = info_span!("Route", otel.kind = "server", trace_id = tracing::field::Empty);
        spans::join(&span, request.metadata());
        let req = request.into_inner();
        span.set_attribute("vane.request_id", req.request_id.clone());
        if let Some(refused) = span.in_scope(|| oversized(&req, self.max_route_bytes)) {
            self.pipeline.metrics().route_error("too_large");
            failed(&span, "too_large", &refused);
            return Err(refused);
        }
        self.pipeline.route(req).instrument(span.clone()).await.map(Response::new).map_err(|e| {
            let reason = reason_of(&e);
            self.pipeline.metrics().route_error(reason);
            let status = status_of(e);
            failed(&span, reason, &status);
            status
        })
    }

    async fn store(&self, request: Request<StoreRequest>) -> Result<Response<StoreReply>, Status> {
        let span = info_span!("Store", otel.kind = "server", trace_id = tracing::field::Empty);
        spans::join(&span, request.metadata());
        Ok(Response::new(self.pipeline.store(request.into_inner()).instrument(span).await))
    }

    /// Filters of release 0.1 send it when an answer will not be stored; a ticket holds nothing
    /// here now (`tickets`), so there is nothing to free.
    async fn release(&self, _request: Request<ReleaseRequest>) -> Result<Response<ReleaseReply>, Status> {
        Ok(Response::new(ReleaseReply { released: false }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_over_the_cap_are_out_of_range() {
        let req = |prompt: usize, context: usize| RouteRequest { prompt: "p".repeat(prompt), context: "c".repeat(context), ..Default::default() };
        assert!(oversized(&req(600, 400), 1000).is_none(), "at the cap");
        let e = oversized(&req(600, 401), 1000).unwrap();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("1001 bytes") && e.message().contains("server.max_route_bytes"), "{}", e.message());
    }
}
