//! One trace per chat request. Envoy gives a wasm gRPC callout no span of its own, so the filter
//! carries the trace to the sidecar itself, in the call's metadata: the client's W3C
//! `traceparent`/`tracestate` when it sent a valid one, else a trace id derived from
//! `x-request-id` for the sidecar to start the trace with. Without a client context the filter
//! also sets `traceparent` on the upstream request (the Route span's, as the sidecar answered),
//! so the model server's spans join the same trace.

use sha2::{Digest, Sha256};

/// The trace a request belongs to, as its headers said.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Trace {
    /// The client (or a tracing Envoy) sent a context: passed on unchanged.
    Joined { traceparent: String, tracestate: Option<String> },
    /// No context came: the sidecar starts a trace with this id (32 lower-case hex digits).
    Started { trace_id: String },
    /// Neither a context nor a request id: the sidecar picks its own trace id.
    #[default]
    Unknown,
}

/// The metadata key that asks the sidecar to start a trace with the given id.
pub const TRACE_ID_KEY: &str = "x-vane-trace-id";

impl Trace {
    /// From the request's `traceparent`, `tracestate` and `x-request-id` headers. Envoy's
    /// request ids are UUIDs: a UUID's 32 hex digits are the trace id as they are (a request id
    /// found in a log is the trace to look up); any other id is hashed into one.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>, request_id: &str) -> Trace {
        if let Some(tp) = traceparent.and_then(|v| std::str::from_utf8(v).ok()).map(str::trim).filter(|tp| is_traceparent(tp)) {
            let tracestate = tracestate.and_then(|v| std::str::from_utf8(v).ok()).filter(|s| crate::headers::is_valid_value(s) && !s.is_empty());
            return Trace::Joined { traceparent: tp.to_string(), tracestate: tracestate.map(String::from) };
        }
        if request_id.is_empty() {
            return Trace::Unknown;
        }
        let uuid: String = request_id.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase();
        let trace_id = if uuid.len() == 32 && is_hex_id(&uuid) { uuid } else { hex(Sha256::digest(request_id.as_bytes()).get(..16).unwrap_or_default()) };
        Trace::Started { trace_id }
    }

    /// The metadata of a Route call.
    pub fn route_metadata(&self) -> Vec<(&'static str, &[u8])> {
        match self {
            Trace::Joined { traceparent, tracestate } => {
                let mut m = vec![("traceparent", traceparent.as_bytes())];
                m.extend(tracestate.as_deref().map(|s| ("tracestate", s.as_bytes())));
                m
            }
            Trace::Started { trace_id } => vec![(TRACE_ID_KEY, trace_id.as_bytes())],
            Trace::Unknown => Vec::new(),
        }
    }

    /// The parent of the request's Store or Release: the Route span (`route_span`, the
    /// traceparent the sidecar answered) when known, else the client's context.
    pub fn cache_call_parent(&self, route_span: Option<&str>) -> Option<String> {
        match (route_span, self) {
            (Some(tp), _) => Some(tp.to_string()),
            (None, Trace::Joined { traceparent, .. }) => Some(traceparent.clone()),
            (None, _) => None,
        }
    }

    /// The `traceparent` to set on the upstream request: none when the client sent its own
    /// (the model server's spans then sit beside the Route span, under the client's). Else the
    /// Route span's, or, when the sidecar gave none (it failed, or traces nothing), one made from
    /// the trace id, marked sampled, so the model server still records under the same trace id.
    pub fn upstream(&self, route_span: Option<&str>) -> Option<String> {
        match (self, route_span) {
            (Trace::Joined { .. }, _) => None,
            (_, Some(tp)) => Some(tp.to_string()),
            (Trace::Started { trace_id }, None) => {
                let span_id = hex(Sha256::digest(trace_id.as_bytes()).get(..8).unwrap_or_default());
                Some(format!("00-{trace_id}-{span_id}-01"))
            }
            (Trace::Unknown, None) => None,
        }
    }
}

/// A version-00 W3C traceparent: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids
/// not all zero. Anything else is ignored, as the spec says, and a new trace is started.
pub fn is_traceparent(tp: &str) -> bool {
    let mut parts = tp.split('-');
    let (Some(version), Some(trace_id), Some(span_id), Some(flags), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    version == "00" && trace_id.len() == 32 && span_id.len() == 16 && flags.len() == 2 && [trace_id, span_id].iter().all(|id| is_hex_id(id)) && is_lower_hex(flags)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lower-case hex and not all zeros (an invalid id in W3C trace context).
fn is_hex_id(s: &str) -> bool {
    is_lower_hex(s) && s.bytes().any(|b| b != b'0')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents_only() {
        assert!(is_traceparent(TP));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_client_context_is_joined_and_passed_on() {
        let t = Trace::from_headers(Some(TP.as_bytes()), Some(b"vendor=x"), "ignored");
        assert_eq!(t, Trace::Joined { traceparent: TP.into(), tracestate: Some("vendor=x".into()) });
        assert_eq!(t.route_metadata(), vec![("traceparent", TP.as_bytes()), ("tracestate", &b"vendor=x"[..])]);
        assert_eq!(t.upstream(Some("00-route")), None, "the client's traceparent reaches the model as it came");
        assert_eq!(t.cache_call_parent(None).as_deref(), Some(TP));
        assert_eq!(t.cache_call_parent(Some("00-route")).as_deref(), Some("00-route"));
        // A tracestate that could split a header is dropped, the traceparent kept.
        let t = Trace::from_headers(Some(TP.as_bytes()), Some(b"a=1\r\nx: y"), "");
        assert_eq!(t, Trace::Joined { traceparent: TP.into(), tracestate: None });
    }

    #[test]
    fn without_a_context_the_trace_id_comes_from_the_request_id() {
        // Envoy's UUID request id is the trace id, dashes removed.
        let t = Trace::from_headers(None, None, "0F8E2C4A-5B6D-4E7F-8A9B-0C1D2E3F4A5B");
        assert_eq!(t, Trace::Started { trace_id: "0f8e2c4a5b6d4e7f8a9b0c1d2e3f4a5b".into() });
        assert_eq!(t.route_metadata(), vec![(TRACE_ID_KEY, &b"0f8e2c4a5b6d4e7f8a9b0c1d2e3f4a5b"[..])]);
        // Another id is hashed; the same id gives the same trace.
        let Trace::Started { trace_id } = Trace::from_headers(Some(b"garbage"), None, "req-1") else { panic!() };
        assert!(trace_id.len() == 32 && is_hex_id(&trace_id), "{trace_id}");
        assert_eq!(Trace::from_headers(None, None, "req-1"), Trace::Started { trace_id: trace_id.clone() });
        assert_ne!(Trace::from_headers(None, None, "req-2"), Trace::Started { trace_id });
        assert_eq!(Trace::from_headers(None, None, ""), Trace::Unknown);
        assert!(Trace::Unknown.route_metadata().is_empty() && Trace::Unknown.upstream(None).is_none());
    }

    #[test]
    fn a_started_trace_reaches_the_model_under_the_route_span_or_its_own_id() {
        let t = Trace::from_headers(None, None, "0f8e2c4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b");
        let route = "00-0f8e2c4a5b6d4e7f8a9b0c1d2e3f4a5b-1111111111111111-00";
        assert_eq!(t.upstream(Some(route)).as_deref(), Some(route), "the sidecar's sampling decision travels on");
        assert_eq!(t.cache_call_parent(Some(route)).as_deref(), Some(route));
        assert_eq!(t.cache_call_parent(None), None);
        // The sidecar failed: the upstream still gets the trace id.
        let made = t.upstream(None).unwrap();
        assert!(is_traceparent(&made) && made.starts_with("00-0f8e2c4a5b6d4e7f8a9b0c1d2e3f4a5b-") && made.ends_with("-01"), "{made}");
    }
}
