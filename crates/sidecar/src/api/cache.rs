//! The cache's admin API on the admin port (loopback by default; put it behind your own auth if
//! you expose it):
//! - `GET /v1/cache/stats`: entries, groups, tenants, payload bytes, estimated bytes, configuration epoch;
//! - `POST /v1/cache/invalidate`: `{"id": 12}`, `{"tenant": "k:…"}`, `{"api_key": "Bearer sk-…"}`
//!   (hashed the way the filter derives the tenant), `{"prompt": "…", "model": "auto"}`, or any
//!   combination: removes the entries matching all of them;
//! - `POST /v1/cache/flush`: removes everything.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use vane_cache::{CacheError, Selector};

use super::{Reply, error};
use crate::pipeline::Pipeline;


#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    #[serde(flatten)]
    selector: Selector,
    /// A raw credential (`Authorization` or `api-key` value): stands for its tenant.
    api_key: Option<String>,
}

pub async fn stats(State(pipeline): State<Arc<Pipeline>>) -> Reply {
    match pipeline.cache_stats().await {
        Some(Ok(stats)) => (StatusCode::OK, Json(stats)),
        Some(Err(_)) => backend_failed(),
        None => disabled(),
    }
}

pub async fn invalidate(State(pipeline): State<Arc<Pipeline>>, body: Result<Json<InvalidateRequest>, JsonRejection>) -> Reply {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid request body: {}", e.body_text()), "invalid_request"),
    };
    let mut selector = req.selector;
    if let Some(key) = req.api_key {
        if selector.tenant.is_some() {
            return error(StatusCode::BAD_REQUEST, "Give 'tenant' or 'api_key', not both.", "invalid_request");
        }
        selector.tenant = Some(vane_proto::wire::tenant::of_credential(key.as_bytes()));
    }
    if selector.is_empty() {
        return error(StatusCode::BAD_REQUEST, "Say what to invalidate: id, tenant, api_key, model and/or prompt (POST /v1/cache/flush empties the cache).", "invalid_request");
    }
    reply(pipeline.invalidate(&selector).await)
}

pub async fn flush(State(pipeline): State<Arc<Pipeline>>) -> Reply {
    reply(pipeline.invalidate(&Selector::default()).await)
}

fn reply(removed: Option<Result<usize, CacheError>>) -> Reply {
    match removed {
        Some(Ok(n)) => (StatusCode::OK, Json(json!({"invalidated": n}))),
        Some(Err(_)) => backend_failed(),
        None => disabled(),
    }
}

fn backend_failed() -> Reply {
    error(StatusCode::SERVICE_UNAVAILABLE, "The cache backend failed; see the sidecar log and vane_cache_errors_total.", "backend_error")
}

fn disabled() -> Reply {
    error(StatusCode::NOT_FOUND, "The cache is disabled (cache.enabled: false).", "cache_disabled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_ids_as_numbers_or_strings_and_refuse_unknown_fields() {
        let s: InvalidateRequest = serde_json::from_str(r#"{"id": "42", "model": "auto"}"#).unwrap();
        assert_eq!((s.selector.id, s.selector.model.as_deref()), (Some(42), Some("auto")));
        let s: InvalidateRequest = serde_json::from_str(r#"{"id": 7}"#).unwrap();
        assert_eq!(s.selector.id, Some(7));
        assert!(serde_json::from_str::<InvalidateRequest>(r#"{"id": "x"}"#).is_err());
        assert!(serde_json::from_str::<InvalidateRequest>(r#"{"tenat": "a"}"#).is_err());
    }
}
