//! The gRPC face of the sidecar (`vane.v1.Router`), and where errors become gRPC statuses.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{Instrument, debug_span};
use vane_proto::v1::router_server::{Router as RouterApi, RouterServer};
use vane_proto::v1::{RouteDecision, RouteRequest, StoreReply, StoreRequest};

use crate::batching::EmbedError;
use crate::router::Router;

pub struct RouterService {
    router: Arc<Router>,
}

impl RouterService {
    pub fn new(router: Arc<Router>) -> RouterServer<RouterService> {
        RouterServer::new(RouterService { router })
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

#[tonic::async_trait]
impl RouterApi for RouterService {
    async fn route(&self, request: Request<RouteRequest>) -> Result<Response<RouteDecision>, Status> {
        let req = request.into_inner();
        let span = debug_span!("route", request_id = %req.request_id, model = %req.model);
        self.router.route(req).instrument(span).await.map(Response::new).map_err(status_of)
    }

    async fn store(&self, request: Request<StoreRequest>) -> Result<Response<StoreReply>, Status> {
        Ok(Response::new(self.router.store(request.into_inner()).await))
    }
}
