//! Turns the sidecar's decision (or its absence) into what the host must do: a pure function,
//! so every branch is unit-tested natively. Only `host` applies the result.

use std::time::Duration;

use prost::Message;

use crate::config::FailureMode;
use crate::headers::is_valid_value;
use crate::request::{BadRequest, ChatRequest};
use crate::trace::is_traceparent;
use vane_proto::v1::{RouteDecision, route_decision::Action};
use vane_proto::wire::{error, sse};

/// A response the filter sends itself instead of forwarding.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Changes to make before the request continues upstream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forward {
    /// Set on the upstream request (`x-vane-model` makes Envoy re-pick the route).
    pub request_headers: Vec<(&'static str, String)>,
    /// The new body, when the model was rewritten (the host fixes `content-length`).
    pub body: Option<Vec<u8>>,
    /// Added to the response the client sees.
    pub response_headers: Vec<(&'static str, String)>,
    /// Store the answer under this ticket when it completes with 2xx (opaque: the sidecar's).
    pub ticket: Option<Vec<u8>>,
    /// The Route span's traceparent, when the sidecar traced the request (see [`crate::trace`]).
    pub route_span: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply(LocalReply),
    Forward(Forward),
}

/// Applies a sidecar decision to a parsed request. `bypass`: the client asked not to use the cache.
/// A decision carrying a value that cannot be a header (the sidecar echoes names it was given)
/// is not applied half-way: the request falls back untouched.
pub fn apply(req: &ChatRequest, decision: RouteDecision, bypass: bool) -> Outcome {
    let outcome = decide(req, decision, bypass);
    let headers_ok = |h: &[(&'static str, String)]| h.iter().all(|(_, v)| is_valid_value(v));
    let valid = match &outcome {
        Outcome::Reply(r) => headers_ok(&r.headers),
        Outcome::Forward(f) => headers_ok(&f.request_headers) && headers_ok(&f.response_headers),
    };
    if valid { outcome } else { fallback(Fallback::SidecarBadHeader, FailureMode::Open) }
}

fn decide(req: &ChatRequest, decision: RouteDecision, bypass: bool) -> Outcome {
    match decision.action {
        Some(Action::Cached(hit)) => {
            let (content_type, body) = if req.stream {
                match sse::replay(&hit.completion, req.include_usage) {
                    Some(sse) => ("text/event-stream", sse),
                    None => return fallback(Fallback::BadCacheEntry, FailureMode::Open),
                }
            } else {
                ("application/json", hit.completion)
            };
            let mut headers = vec![
                ("content-type", content_type.into()),
                ("x-vane-cache", "hit".into()),
                ("x-vane-similarity", format!("{:.4}", hit.similarity)),
            ];
            if !hit.entry_id.is_empty() {
                headers.push(("x-vane-cache-entry", hit.entry_id));
            }
            Outcome::Reply(LocalReply { status: 200, headers, body })
        }
        Some(Action::Block(block)) => {
            let status = if (400..600).contains(&block.status) { block.status } else { 403 };
            Outcome::Reply(LocalReply {
                status,
                headers: vec![("content-type", "application/json".into())],
                body: error::body(&block.message, &block.r#type, &block.code, None),
            })
        }
        Some(Action::Forward(fwd)) => {
            let mut out = Forward::default();
            // A patch that is not a JSON object is ignored rather than trusted half-way.
            let patch = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&fwd.body_patch).ok().filter(|p| !p.is_empty());
            let model = Some(fwd.model.as_str()).filter(|m| !m.is_empty());
            if patch.is_some() || model.is_some_and(|m| m != req.model) {
                out.body = Some(req.rewritten_body(model, patch.as_ref()));
            }
            if let Some(model) = model {
                out.request_headers.push(("x-vane-model", model.into()));
                out.response_headers.push(("x-vane-model", model.into()));
            }
            if !fwd.pii.is_empty() {
                out.request_headers.push(("x-vane-pii", fwd.pii.clone()));
                out.response_headers.push(("x-vane-pii", fwd.pii));
            }
            if let Some(score) = fwd.jailbreak.filter(|s| s.is_finite()) {
                let score = format!("{score:.3}");
                out.request_headers.push(("x-vane-jailbreak", score.clone()));
                out.response_headers.push(("x-vane-jailbreak", score));
            }
            if let Some(on) = fwd.reasoning {
                let value = if on { "on" } else { "off" };
                out.request_headers.push(("x-vane-reasoning", value.into()));
                out.response_headers.push(("x-vane-reasoning", value.into()));
            }
            if !fwd.category.is_empty() {
                let confidence = format!("{:.3}", fwd.confidence);
                out.request_headers.push(("x-vane-category", fwd.category.clone()));
                out.request_headers.push(("x-vane-confidence", confidence.clone()));
                out.response_headers.push(("x-vane-category", fwd.category));
                out.response_headers.push(("x-vane-confidence", confidence));
            }
            if !fwd.language.is_empty() {
                out.request_headers.push(("x-vane-language", fwd.language.clone()));
                out.response_headers.push(("x-vane-language", fwd.language));
            }
            let cache = if bypass { "bypass" } else { "miss" };
            out.response_headers.push(("x-vane-cache", cache.into()));
            out.ticket = Some(fwd.ticket).filter(|t| !t.is_empty());
            out.route_span = Some(fwd.traceparent).filter(|tp| is_traceparent(tp));
            Outcome::Forward(out)
        }
        None => fallback(Fallback::EmptyDecision, FailureMode::Open),
    }
}

/// Why a request went on without a usable sidecar decision: the `x-vane-fallback` value.
/// Every reason is listed in README.md ("Fail open"); a test holds the two together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The Route call could not be made (no such cluster) or ended UNAVAILABLE quickly: the
    /// sidecar is down or not listening.
    SidecarUnavailable,
    /// No answer within `timeout_ms` (DEADLINE_EXCEEDED, or Envoy's own deadline, which it
    /// reports as UNAVAILABLE).
    SidecarTimeout,
    /// RESOURCE_EXHAUSTED: the sidecar's admission limit is reached.
    SidecarOverloaded,
    /// OUT_OF_RANGE: the request is over the sidecar's `server.max_route_bytes`.
    SidecarTooLarge,
    /// Any other gRPC error.
    SidecarError,
    /// The sidecar's reply is not a `RouteDecision`.
    SidecarBadReply,
    /// The decision carries a value that cannot be a header; none of it is applied.
    SidecarBadHeader,
    /// The decision has no action.
    EmptyDecision,
    /// A cache hit that cannot be replayed as the SSE stream the client asked for.
    BadCacheEntry,
}

impl Fallback {
    pub const ALL: [Fallback; 9] = [
        Fallback::SidecarUnavailable,
        Fallback::SidecarTimeout,
        Fallback::SidecarOverloaded,
        Fallback::SidecarTooLarge,
        Fallback::SidecarError,
        Fallback::SidecarBadReply,
        Fallback::SidecarBadHeader,
        Fallback::EmptyDecision,
        Fallback::BadCacheEntry,
    ];

    /// The header value (and what logs and tests match on).
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::SidecarUnavailable => "sidecar_unavailable",
            Fallback::SidecarTimeout => "sidecar_timeout",
            Fallback::SidecarOverloaded => "sidecar_overloaded",
            Fallback::SidecarTooLarge => "sidecar_too_large",
            Fallback::SidecarError => "sidecar_error",
            Fallback::SidecarBadReply => "sidecar_bad_reply",
            Fallback::SidecarBadHeader => "sidecar_bad_header",
            Fallback::EmptyDecision => "empty_decision",
            Fallback::BadCacheEntry => "bad_cache_entry",
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sidecar could not decide (`reason` says why): forward untouched, or 503 when closed.
pub fn fallback(reason: Fallback, mode: FailureMode) -> Outcome {
    let value = reason.as_str();
    match mode {
        FailureMode::Open => Outcome::Forward(Forward {
            request_headers: vec![("x-vane-fallback", value.into())],
            response_headers: vec![("x-vane-fallback", value.into())],
            ..Forward::default()
        }),
        FailureMode::Closed => Outcome::Reply(LocalReply {
            status: 503,
            headers: vec![("content-type", "application/json".into()), ("x-vane-fallback", value.into())],
            body: error::body(
                &format!("The router is unavailable ({reason}); try again later."),
                error::SERVER_ERROR,
                "router_unavailable",
                None,
            ),
        }),
    }
}

/// 400 for a body that is not a usable chat request.
pub fn bad_request(err: &BadRequest) -> LocalReply {
    LocalReply {
        status: 400,
        headers: vec![("content-type", "application/json".into())],
        body: error::body(&err.message, error::INVALID_REQUEST, "invalid_request", err.param),
    }
}

/// 413 for a body over the configured cap.
pub fn too_large(limit: usize) -> LocalReply {
    LocalReply {
        status: 413,
        headers: vec![("content-type", "application/json".into())],
        body: error::body(
            &format!("The request body is larger than the {limit} bytes this gateway accepts."),
            error::INVALID_REQUEST,
            "request_too_large",
            None,
        ),
    }
}

/// Maps a failed Route call to an `x-vane-fallback` reason. Envoy reports an expired
/// `dispatch_grpc_call` deadline as UNAVAILABLE (14), like a dead sidecar, so the time the
/// call took is what tells a slow sidecar from a missing one.
pub fn reason_for_grpc_status(code: u32, took: Option<Duration>, timeout: Duration) -> Fallback {
    let deadline_passed = took.is_some_and(|t| t >= timeout.mul_f32(0.9));
    match code {
        4 => Fallback::SidecarTimeout,
        14 if deadline_passed => Fallback::SidecarTimeout,
        8 => Fallback::SidecarOverloaded,
        11 => Fallback::SidecarTooLarge,
        14 => Fallback::SidecarUnavailable,
        _ => Fallback::SidecarError,
    }
}

/// The sidecar's Route reply (the call succeeded): decoded and applied, or a fallback when it
/// is not a `RouteDecision`.
pub fn apply_reply(req: &ChatRequest, reply: &[u8], bypass: bool, mode: FailureMode) -> Outcome {
    match RouteDecision::decode(reply) {
        Ok(d) => apply(req, d, bypass),
        Err(e) => {
            log::warn!("vane: undecodable sidecar reply: {e}");
            fallback(Fallback::SidecarBadReply, mode)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vane_proto::v1::{Block, Cached, Forward as Fwd};

    fn req(stream: bool) -> ChatRequest {
        let body = format!(r#"{{"model":"auto","stream":{stream},"messages":[{{"role":"user","content":"2+2?"}}]}}"#);
        ChatRequest::parse(body.as_bytes()).unwrap()
    }

    fn decision(action: Action) -> RouteDecision {
        RouteDecision { action: Some(action) }
    }

    const COMPLETION: &[u8] = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}]}"#;

    #[test]
    fn forward_rewrites_model_and_sets_routing_headers() {
        let d = decision(Action::Forward(Fwd { model: "math-model".into(), category: "math".into(), confidence: 0.91234, ticket: b"t1".to_vec(), ..Default::default() }));
        let Outcome::Forward(f) = apply(&req(false), d, false) else { panic!("expected forward") };
        let body: serde_json::Value = serde_json::from_slice(f.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["model"], "math-model");
        assert!(f.request_headers.contains(&("x-vane-model", "math-model".into())));
        assert!(f.request_headers.contains(&("x-vane-confidence", "0.912".into())));
        assert!(f.response_headers.contains(&("x-vane-cache", "miss".into())));
        assert_eq!(f.ticket.as_deref(), Some(&b"t1"[..]));
    }

    #[test]
    fn forward_applies_reasoning_patch_and_header() {
        let patch = r#"{"chat_template_kwargs":{"enable_thinking":true}}"#;
        let d = decision(Action::Forward(Fwd { model: "auto".into(), reasoning: Some(true), body_patch: patch.into(), ..Default::default() }));
        let Outcome::Forward(f) = apply(&req(false), d, false) else { panic!("expected forward") };
        let body: serde_json::Value = serde_json::from_slice(f.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["chat_template_kwargs"]["enable_thinking"], true);
        assert!(f.response_headers.contains(&("x-vane-reasoning", "on".into())));
        // A patch that is not a JSON object is ignored; no reasoning decision, no header.
        let d = decision(Action::Forward(Fwd { model: "auto".into(), body_patch: "[1]".into(), ..Default::default() }));
        let Outcome::Forward(f) = apply(&req(false), d, false) else { panic!("expected forward") };
        assert!(f.body.is_none());
        assert!(!f.response_headers.iter().any(|(k, _)| *k == "x-vane-reasoning"));
    }

    #[test]
    fn flagged_jailbreak_score_goes_both_ways() {
        let d = decision(Action::Forward(Fwd { model: "auto".into(), jailbreak: Some(0.93456), ..Default::default() }));
        let Outcome::Forward(f) = apply(&req(false), d, false) else { panic!("expected forward") };
        assert!(f.request_headers.contains(&("x-vane-jailbreak", "0.935".into())));
        assert!(f.response_headers.contains(&("x-vane-jailbreak", "0.935".into())));
        let d = decision(Action::Forward(Fwd { model: "auto".into(), jailbreak: Some(f32::NAN), ..Default::default() }));
        let Outcome::Forward(f) = apply(&req(false), d, false) else { panic!("expected forward") };
        assert!(!f.response_headers.iter().any(|(k, _)| *k == "x-vane-jailbreak"));
    }

    #[test]
    fn forward_to_the_same_model_keeps_the_body() {
        let d = decision(Action::Forward(Fwd { model: "auto".into(), ..Default::default() }));
        let Outcome::Forward(f) = apply(&req(false), d, true) else { panic!("expected forward") };
        assert!(f.body.is_none());
        assert!(f.ticket.is_none());
        assert!(f.response_headers.contains(&("x-vane-cache", "bypass".into())));
    }

    #[test]
    fn cached_json_and_sse() {
        let hit = || decision(Action::Cached(Cached { completion: COMPLETION.to_vec(), similarity: 0.98766, entry_id: "e".into() }));
        let Outcome::Reply(json) = apply(&req(false), hit(), false) else { panic!() };
        assert_eq!(json.body, COMPLETION);
        assert!(json.headers.contains(&("x-vane-cache", "hit".into())));
        assert!(json.headers.contains(&("x-vane-similarity", "0.9877".into())));
        assert!(json.headers.contains(&("x-vane-cache-entry", "e".into())));
        let Outcome::Reply(sse) = apply(&req(true), hit(), false) else { panic!() };
        assert!(sse.headers.contains(&("content-type", "text/event-stream".into())));
        assert!(sse.body.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn unreplayable_cache_entry_falls_back_instead_of_breaking_the_stream() {
        let d = decision(Action::Cached(Cached { completion: b"nope".to_vec(), ..Default::default() }));
        assert!(matches!(apply(&req(true), d, false), Outcome::Forward(f) if f.request_headers[0].1 == "bad_cache_entry"));
    }

    #[test]
    fn block_is_an_openai_error_with_a_sane_status() {
        let d = decision(Action::Block(Block { status: 403, r#type: "invalid_request_error".into(), code: "jailbreak".into(), message: "no".into() }));
        let Outcome::Reply(r) = apply(&req(false), d, false) else { panic!() };
        assert_eq!(r.status, 403);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "jailbreak");
        let weird = decision(Action::Block(Block { status: 200, ..Default::default() }));
        assert!(matches!(apply(&req(false), weird, false), Outcome::Reply(r) if r.status == 403));
    }

    #[test]
    fn sidecar_values_that_cannot_be_headers_fall_back_untouched() {
        let evil = "m\r\nSet-Cookie: a=1".to_string();
        for fwd in [
            Fwd { model: evil.clone(), ..Default::default() },
            Fwd { model: "auto".into(), category: evil.clone(), ..Default::default() },
            Fwd { model: "auto".into(), pii: "redact:\0".into(), ..Default::default() },
        ] {
            let Outcome::Forward(f) = apply(&req(false), decision(Action::Forward(fwd)), false) else { panic!() };
            assert_eq!(f.request_headers, vec![("x-vane-fallback", "sidecar_bad_header".to_string())]);
            assert!(f.body.is_none() && f.ticket.is_none(), "nothing of the bad decision is applied");
        }
        let hit = Cached { completion: COMPLETION.to_vec(), similarity: 1.0, entry_id: "e\n1".into() };
        assert!(matches!(apply(&req(false), decision(Action::Cached(hit)), false), Outcome::Forward(f) if f.request_headers[0].1 == "sidecar_bad_header"));
    }

    #[test]
    fn a_forward_carries_the_route_span_when_it_is_a_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (sent, kept) in [(tp, Some(tp)), ("", None), ("00-zz", None)] {
            let d = RouteDecision { action: Some(Action::Forward(Fwd { traceparent: sent.into(), ..Default::default() })) };
            let Outcome::Forward(f) = apply(&req(false), d, false) else { panic!() };
            assert_eq!(f.route_span.as_deref(), kept, "{sent:?}");
        }
    }

    #[test]
    fn fallback_open_and_closed() {
        let Outcome::Forward(f) = fallback(Fallback::SidecarTimeout, FailureMode::Open) else { panic!() };
        assert_eq!(f.request_headers, vec![("x-vane-fallback", "sidecar_timeout".to_string())]);
        assert!(f.body.is_none() && f.ticket.is_none());
        let Outcome::Reply(r) = fallback(Fallback::SidecarTimeout, FailureMode::Closed) else { panic!() };
        assert_eq!(r.status, 503);
        assert!(r.headers.contains(&("x-vane-fallback", "sidecar_timeout".into())));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "router_unavailable");
        assert!(v["error"]["message"].as_str().unwrap().contains("(sidecar_timeout)"), "{v}");
        assert!(matches!(apply(&req(false), RouteDecision { action: None }, false), Outcome::Forward(_)));
    }

    #[test]
    fn a_reply_that_is_not_a_decision_falls_back_in_the_configured_mode() {
        let Outcome::Forward(f) = apply_reply(&req(false), b"\xff\xff\xff", false, FailureMode::Open) else { panic!() };
        assert_eq!(f.request_headers, vec![("x-vane-fallback", "sidecar_bad_reply".to_string())]);
        assert!(matches!(apply_reply(&req(false), b"\xff\xff\xff", false, FailureMode::Closed), Outcome::Reply(r) if r.status == 503));
        let d = RouteDecision { action: Some(Action::Forward(Fwd { model: "math-model".into(), ..Default::default() })) };
        let Outcome::Forward(f) = apply_reply(&req(false), &d.encode_to_vec(), true, FailureMode::Closed) else { panic!() };
        assert!(f.response_headers.contains(&("x-vane-cache", "bypass".into())));
        // An empty reply decodes as a decision without an action.
        assert!(matches!(apply_reply(&req(false), b"", false, FailureMode::Closed), Outcome::Forward(f) if f.request_headers[0].1 == "empty_decision"));
    }

    #[test]
    fn every_fallback_reason_has_one_spelling_and_is_documented() {
        let readme = include_str!("../../../README.md");
        let mut seen = std::collections::HashSet::new();
        for reason in Fallback::ALL {
            let s = reason.as_str();
            assert!(seen.insert(s), "{s} spelled twice");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
            assert_eq!(reason.to_string(), s);
            assert!(readme.contains(&format!("`{s}`")), "README.md does not document the fallback reason {s}");
        }
    }

    #[test]
    fn grpc_codes_map_to_reasons() {
        let timeout = Duration::from_millis(200);
        let quick = Some(Duration::from_millis(3));
        let slow = Some(Duration::from_millis(201));
        assert_eq!(reason_for_grpc_status(4, quick, timeout), Fallback::SidecarTimeout);
        assert_eq!(reason_for_grpc_status(14, quick, timeout), Fallback::SidecarUnavailable);
        assert_eq!(reason_for_grpc_status(14, slow, timeout), Fallback::SidecarTimeout, "Envoy's deadline is UNAVAILABLE");
        assert_eq!(reason_for_grpc_status(14, None, timeout), Fallback::SidecarUnavailable);
        assert_eq!(reason_for_grpc_status(8, quick, timeout), Fallback::SidecarOverloaded);
        assert_eq!(reason_for_grpc_status(11, quick, timeout), Fallback::SidecarTooLarge);
        assert_eq!(reason_for_grpc_status(13, slow, timeout), Fallback::SidecarError);
    }
}
