//! The request side before the Route call: which requests the filter handles, what their
//! headers tell it ([`Facts`]), and the checked body and Route request it sends. The host hands
//! its headers over as a [`RequestHeaders`]; tests use a fake.

use vane_proto::v1::{CacheControl, RouteRequest};

use crate::config::Config;
use crate::decision::{self, LocalReply};
use crate::headers::decode_pairs;
use crate::request::{BadRequest, ChatRequest};
use crate::tenant;
use crate::trace::Trace;

/// The request headers, as the host can give them.
pub trait RequestHeaders {
    /// The value of header `name` (lower-case) as raw bytes.
    fn get(&self, name: &str) -> Option<Vec<u8>>;
    /// Every header, duplicates included, in the host's serialization (see
    /// [`decode_pairs`]); `None` when the host cannot give them.
    fn serialized(&self) -> Option<Vec<u8>>;
}

/// What the request headers told us, kept while the body is buffered.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub request_id: String,
    pub tenant: String,
    pub cache_control: CacheControl,
    pub trace: Trace,
}

/// What to do with a request once its headers are in.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Not ours: let it go untouched.
    PassThrough,
    /// Ours, and refused before its body is read.
    Reply(LocalReply),
    /// Ours: buffer the body, then route it.
    Buffer(Facts),
}

/// Whether the filter handles the request: every `POST` to a configured path, whatever its
/// content-type (a chat body that is not JSON gets 400 rather than reaching a model unjudged:
/// upstreams such as vLLM read the body as JSON regardless).
pub fn handles(config: &Config, method: Option<&[u8]>, path: Option<&[u8]>) -> bool {
    method == Some(b"POST") && path.is_some_and(|p| config.handles_path(&String::from_utf8_lossy(p)))
}

/// The request-headers step: pass through, refuse (no body, a declared length over
/// `max_body_bytes`, a refused tenant header), or buffer with the request's [`Facts`].
/// The whole header map is read only for requests the filter handles.
pub fn admit(config: &Config, headers: &impl RequestHeaders, end_of_stream: bool) -> Admission {
    if !handles(config, headers.get(":method").as_deref(), headers.get(":path").as_deref()) {
        return Admission::PassThrough;
    }
    if end_of_stream {
        return Admission::Reply(decision::bad_request(&BadRequest::empty_body()));
    }
    let declared = headers.get("content-length").and_then(|l| String::from_utf8_lossy(&l).trim().parse::<usize>().ok());
    if declared.is_some_and(|l| l > config.max_body_bytes) {
        return Admission::Reply(decision::too_large(config.max_body_bytes));
    }
    let map = headers.serialized();
    let pairs = map.as_deref().and_then(decode_pairs);
    let tenant = match pairs.as_deref().map(|p| tenant::identify(config, p)) {
        Some(Ok(tenant)) => tenant,
        Some(Err(e)) => return Admission::Reply(decision::bad_request(&e)),
        None => {
            log::warn!("vane: unreadable request headers; the request is treated as anonymous");
            String::new()
        }
    };
    // Unreadable headers: no tenant is known, so no cache either way.
    let anonymous_cache = config.anonymous_cache && pairs.is_some();
    let cache_control = tenant::cache_control(headers.get("x-vane-cache-control").as_deref(), &tenant, anonymous_cache);
    let request_id = headers.get("x-request-id").map(|id| String::from_utf8_lossy(&id).into_owned()).unwrap_or_default();
    let trace = Trace::from_headers(headers.get("traceparent").as_deref(), headers.get("tracestate").as_deref(), &request_id);
    Admission::Buffer(Facts { request_id, tenant, cache_control, trace })
}

/// 413 when `size` bytes of body (all of it, or what is buffered so far) are over the cap.
pub fn over_limit(config: &Config, size: usize) -> Option<LocalReply> {
    (size > config.max_body_bytes).then(|| decision::too_large(config.max_body_bytes))
}

/// The whole body: within the cap and a chat request, or the reply that refuses it.
pub fn read_body(config: &Config, body: &[u8]) -> Result<ChatRequest, LocalReply> {
    if let Some(reply) = over_limit(config, body.len()) {
        return Err(reply);
    }
    ChatRequest::parse(body).map_err(|e| decision::bad_request(&e))
}

impl Facts {
    /// The Route call for this request.
    pub fn route_request(&self, req: &ChatRequest) -> RouteRequest {
        RouteRequest {
            request_id: self.request_id.clone(),
            model: req.model.clone(),
            stream: req.stream,
            prompt: req.prompt.clone(),
            context: req.context.clone(),
            tenant: self.tenant.clone(),
            cache_control: self.cache_control as i32,
        }
    }

    /// Whether the client asked not to be answered from the cache (`x-vane-cache: bypass`).
    pub fn bypass(&self) -> bool {
        self.cache_control != CacheControl::Default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::encode_pairs;

    /// Headers as a test writes them; `readable: false` is a host whose header map fails.
    struct Fake {
        headers: Vec<(&'static str, Vec<u8>)>,
        readable: bool,
    }

    impl RequestHeaders for Fake {
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        }
        fn serialized(&self) -> Option<Vec<u8>> {
            let pairs: Vec<(&[u8], &[u8])> = self.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())).collect();
            self.readable.then(|| encode_pairs(&pairs))
        }
    }

    fn chat(extra: &[(&'static str, &[u8])]) -> Fake {
        let mut headers = vec![(":method", b"POST".to_vec()), (":path", b"/v1/chat/completions".to_vec())];
        headers.extend(extra.iter().map(|(k, v)| (*k, v.to_vec())));
        Fake { headers, readable: true }
    }

    fn facts(admission: Admission) -> Facts {
        match admission {
            Admission::Buffer(facts) => facts,
            other => panic!("expected Buffer, got {other:?}"),
        }
    }

    fn status(admission: Admission) -> u32 {
        match admission {
            Admission::Reply(r) => r.status,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    const KEY: &[u8] = b"Bearer sk-a";
    const TENANT: &str = "k:49aa12bb503b524dee8b36d203ce9d31";

    #[test]
    fn only_posts_to_configured_paths_are_handled() {
        let c = Config::default();
        for (method, path, handled) in [
            (Some(&b"POST"[..]), Some(&b"/v1/chat/completions"[..]), true),
            (Some(b"POST"), Some(b"/v1/chat/completions?x=1"), true),
            (Some(b"POST"), Some(b"/v1/chat/%63ompletions"), true),
            (Some(b"GET"), Some(b"/v1/chat/completions"), false),
            (Some(b"post"), Some(b"/v1/chat/completions"), false),
            (Some(b"PUT"), Some(b"/v1/chat/completions"), false),
            (None, Some(b"/v1/chat/completions"), false),
            (Some(b"POST"), Some(b"/v1/completions"), false),
            (Some(b"POST"), Some(b"/v1/embeddings"), false),
            (Some(b"POST"), None, false),
        ] {
            assert_eq!(handles(&c, method, path), handled, "{method:?} {path:?}");
        }
        let get = Fake { headers: vec![(":method", b"GET".to_vec()), (":path", b"/v1/chat/completions".to_vec())], readable: true };
        assert_eq!(admit(&c, &get, true), Admission::PassThrough, "not ours: even an empty body passes");
    }

    #[test]
    fn facts_carry_the_client_trace_context_or_one_from_the_request_id() {
        let c = Config::default();
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let f = facts(admit(&c, &chat(&[("traceparent", tp), ("tracestate", b"v=1"), ("x-request-id", b"r-1")]), false));
        assert_eq!(f.trace, Trace::Joined { traceparent: String::from_utf8_lossy(tp).into(), tracestate: Some("v=1".into()) });
        let f = facts(admit(&c, &chat(&[("x-request-id", b"0f8e2c4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b")]), false));
        assert_eq!(f.trace, Trace::Started { trace_id: "0f8e2c4a5b6d4e7f8a9b0c1d2e3f4a5b".into() });
    }

    #[test]
    fn a_handled_request_without_a_body_is_a_400() {
        assert_eq!(status(admit(&Config::default(), &chat(&[("authorization", KEY)]), true)), 400);
    }

    #[test]
    fn a_declared_length_over_the_cap_is_a_413_before_buffering() {
        let c = Config::from_json(br#"{"max_body_bytes": 100}"#).unwrap();
        assert_eq!(status(admit(&c, &chat(&[("content-length", b"101")]), false)), 413);
        assert_eq!(status(admit(&c, &chat(&[("content-length", b" 101 ")]), false)), 413);
        for fine in [&b"100"[..], b"0", b"abc", b"-1", b""] {
            assert!(matches!(admit(&c, &chat(&[("content-length", fine)]), false), Admission::Buffer(_)), "{fine:?}");
        }
    }

    #[test]
    fn facts_carry_the_tenant_cache_control_and_request_id() {
        let c = Config::default();
        let f = facts(admit(&c, &chat(&[("authorization", KEY), ("x-request-id", b"r-1")]), false));
        assert_eq!(f, Facts { request_id: "r-1".into(), tenant: TENANT.into(), cache_control: CacheControl::Default, trace: Trace::from_headers(None, None, "r-1") });
        assert!(!f.bypass());
        for (value, want) in [(&b"no-cache"[..], CacheControl::NoCache), (b"NO-STORE ", CacheControl::NoStore), (b"sometimes", CacheControl::Default)] {
            let f = facts(admit(&c, &chat(&[("authorization", KEY), ("x-vane-cache-control", value)]), false));
            assert_eq!(f.cache_control, want, "{value:?}");
        }
        assert_eq!(facts(admit(&c, &chat(&[("authorization", KEY)]), false)).request_id, "");
    }

    #[test]
    fn anonymous_requests_bypass_the_cache_unless_configured() {
        let f = facts(admit(&Config::default(), &chat(&[]), false));
        assert_eq!((f.tenant.as_str(), f.cache_control), ("", CacheControl::NoStore));
        assert!(f.bypass());
        let shared = Config::from_json(br#"{"anonymous_cache": true}"#).unwrap();
        assert_eq!(facts(admit(&shared, &chat(&[]), false)).cache_control, CacheControl::Default);
    }

    #[test]
    fn unreadable_headers_mean_anonymous_and_no_cache_even_when_shared() {
        let shared = Config::from_json(br#"{"anonymous_cache": true}"#).unwrap();
        let mut h = chat(&[("authorization", KEY)]);
        h.readable = false;
        let f = facts(admit(&shared, &h, false));
        assert_eq!((f.tenant.as_str(), f.cache_control), ("", CacheControl::NoStore));
    }

    #[test]
    fn a_refused_tenant_header_is_a_400() {
        let c = Config::from_json(br#"{"tenant_header": "x-tenant"}"#).unwrap();
        assert_eq!(status(admit(&c, &chat(&[("x-tenant", b"a"), ("x-tenant", b"b")]), false)), 400);
        assert_eq!(facts(admit(&c, &chat(&[("x-tenant", b"acme")]), false)).tenant, "h:acme");
    }

    #[test]
    fn the_whole_body_is_checked_then_parsed() {
        let c = Config::from_json(br#"{"max_body_bytes": 80}"#).unwrap();
        let ok = br#"{"model":"auto","messages":[{"role":"user","content":"2+2?"}]}"#;
        assert_eq!(read_body(&c, ok).unwrap().prompt, "2+2?");
        assert_eq!(read_body(&c, &[b' '; 81]).unwrap_err().status, 413);
        assert_eq!(read_body(&c, b"{not json").unwrap_err().status, 400);
        assert_eq!(read_body(&c, b"").unwrap_err().status, 400);
        assert!(over_limit(&c, 80).is_none());
        assert_eq!(over_limit(&c, 81).map(|r| r.status), Some(413));
    }

    #[test]
    fn the_route_request_has_the_facts_and_the_parsed_body() {
        let req = ChatRequest::parse(br#"{"model":"auto","stream":true,"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let f = Facts { request_id: "r".into(), tenant: TENANT.into(), cache_control: CacheControl::NoCache, trace: Trace::Unknown };
        let msg = f.route_request(&req);
        assert_eq!((msg.request_id.as_str(), msg.model.as_str(), msg.stream, msg.prompt.as_str()), ("r", "auto", true, "hi"));
        assert_eq!(msg.tenant, TENANT);
        assert_eq!(msg.context, req.context);
        assert_eq!(msg.cache_control, CacheControl::NoCache as i32);
        assert!(f.bypass());
    }
}
