//! The admin port's JSON API: `POST /v1/classify` ([`classify`]) and the cache's admin
//! endpoints ([`cache`]). Errors use the OpenAI error format, as the filter's do.

pub mod cache;
pub mod classify;

use axum::Json;
use axum::http::StatusCode;
use serde_json::Value;
use vane_proto::wire::error::{INVALID_REQUEST, SERVER_ERROR, json};

pub type Reply = (StatusCode, Json<Value>);

/// `{"error": {"message", "type", "param", "code"}}` ([`vane_proto::wire::error`]); the type
/// follows the status class.
pub fn error(status: StatusCode, message: impl Into<String>, code: &str) -> Reply {
    let kind = if status.is_server_error() { SERVER_ERROR } else { INVALID_REQUEST };
    (status, Json(json(&message.into(), kind, code, None)))
}
