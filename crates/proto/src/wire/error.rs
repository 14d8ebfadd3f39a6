//! The OpenAI error body, `{"error": {"message", "type", "param", "code"}}`, as
//! OpenAI-compatible servers return it: the filter's local replies (400, 413, 503, blocks) and
//! the sidecar's HTTP APIs both answer in this shape, so clients parse one format.

use serde_json::{Value, json};

/// `type` for a request the client must change.
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// `type` for a failure on our side.
pub const SERVER_ERROR: &str = "server_error";

/// The error body as a JSON value (for a server that serialises it itself, e.g. axum's `Json`).
///
/// ```
/// let v = vane_proto::wire::error::json("No.", "invalid_request_error", "jailbreak", None);
/// assert_eq!(v["error"]["code"], "jailbreak");
/// assert!(v["error"]["param"].is_null());
/// ```
pub fn json(message: &str, kind: &str, code: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// The error body serialised, ready to send.
pub fn body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Vec<u8> {
    json(message, kind, code, param).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_openai_shaped() {
        let v: Value = serde_json::from_slice(&body("bad", INVALID_REQUEST, "invalid_json", Some("messages"))).unwrap();
        assert_eq!(v, json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "invalid_json"}}));
        let v = json("down", SERVER_ERROR, "backend_error", None);
        assert_eq!(v["error"].as_object().unwrap().len(), 4, "param is present, as null");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn messages_are_escaped_not_spliced() {
        let v: Value = serde_json::from_slice(&body("a \"quoted\"\n} message", SERVER_ERROR, "x", None)).unwrap();
        assert_eq!(v["error"]["message"], "a \"quoted\"\n} message");
    }
}
