//! The only module that talks to Envoy. It calls `proxy_wasm::hostcalls` directly because the
//! SDK's trait helpers `unwrap()` host results (and header values as UTF-8), and a panic kills
//! the VM. Per request it is a small state machine; all decisions are made in `decision`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use log::{debug, info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use vane_proto::v1::{CacheControl, ReleaseRequest, RouteDecision, RouteRequest, StoreRequest};

use crate::config::Config;
use crate::decision::{self, Fallback, LocalReply, Outcome};
use crate::headers::{OWN_REQUEST_HEADERS, decode_pairs};
use crate::request::{BadRequest, ChatRequest};
use crate::tenant;

/// Encoded `Store` and `Release` calls (method, message) waiting for the root context's next
/// tick. They are sent from the root context because a call made by a stream's context is
/// cancelled when the stream ends, which is exactly when the answer is complete.
type StoreQueue = Rc<RefCell<VecDeque<(&'static str, Vec<u8>)>>>;

#[derive(Default)]
pub struct Root {
    config: Rc<Config>,
    stores: StoreQueue,
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, _size: usize) {
        if status != 0 {
            warn!("vane: cache store failed with gRPC status {status}");
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default();
        match Config::from_json(&raw) {
            Ok(config) => {
                if hostcalls::set_tick_period(Duration::from_millis(config.store_flush_ms)).is_err() {
                    warn!("vane: cannot set the tick period; cached answers will not be stored");
                }
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                log::error!("vane: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1000));
        while let Some((method, msg)) = self.stores.borrow_mut().pop_front() {
            let sent = hostcalls::dispatch_grpc_call(&self.config.sidecar_cluster, vane_proto::SERVICE, method, Vec::new(), Some(&msg), timeout);
            if let Err(e) = sent {
                warn!("vane: cannot send a cache {method}: {e:?}");
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { config: self.config.clone(), stores: self.stores.clone(), state: State::PassThrough }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Where one request is.
enum State {
    /// Not a request we handle, or we are done with it.
    PassThrough,
    /// Buffering the request body.
    Buffering(Facts),
    /// Waiting for the sidecar's Route answer (sent at the given host time).
    Routing(Facts, ChatRequest, Option<SystemTime>),
    /// Sent upstream; decorate the response and copy it for the cache.
    Forwarded { response_headers: Vec<(&'static str, String)>, capture: Option<Capture> },
    /// We answered locally; our own reply also passes through the response callbacks.
    Replied,
}

/// What the request headers told us.
struct Facts {
    request_id: String,
    tenant: String,
    cache_control: CacheControl,
}

/// The upstream answer, copied as it streams by, for `Store`.
struct Capture {
    ticket: String,
    sse: bool,
    body: Vec<u8>,
    complete: bool,
}

struct Stream {
    config: Rc<Config>,
    stores: StoreQueue,
    state: State,
}

/// A header value as raw bytes (the SDK's string getter panics on non-UTF-8 values).
fn header_bytes(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

/// Every request header, duplicates included, serialized (see `headers::decode_pairs`). The
/// SDK's `get_map_bytes` panics on a name that is not UTF-8, so this asks the host itself.
fn request_header_map() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer of `size` bytes that it allocated through
    // the SDK's `proxy_on_memory_allocate` (a boxed slice); we take ownership, as the SDK does.
    let status = unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) };
    match status {
        0 if data.is_null() => Some(Vec::new()),
        0 => Some(unsafe { Vec::from_raw_parts(data, size, size) }),
        _ => None,
    }
}

/// A header value as text, for values we only compare or log.
fn header(map: MapType, name: &str) -> Option<String> {
    header_bytes(map, name).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Queues a call for the root context's next tick; beyond `limit` waiting it is dropped.
fn send_later(stores: &StoreQueue, limit: usize, method: &'static str, msg: Vec<u8>) {
    let mut stores = stores.borrow_mut();
    if stores.len() < limit {
        stores.push_back((method, msg));
    } else {
        warn!("vane: too many pending cache calls; dropping a {method}");
    }
}

/// The answer will not be stored: the sidecar frees its ticket (it holds the prompt) now
/// instead of at its expiry. Nothing to do once the answer was sent in a Store.
fn release(stores: &StoreQueue, limit: usize, capture: &mut Option<Capture>) {
    if let Some(c) = capture.take()
        && !c.complete
    {
        send_later(stores, limit, "Release", ReleaseRequest { ticket: c.ticket }.encode_to_vec());
    }
}

fn set_header(map: MapType, name: &str, value: &str) {
    if hostcalls::set_map_value(map, name, Some(value)).is_err() {
        warn!("vane: cannot set header {name}");
    }
}

impl Stream {
    fn reply(&mut self, reply: LocalReply) -> Action {
        self.state = State::Replied;
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body)) {
            warn!("vane: cannot send a local reply: {e:?}");
        }
        Action::Pause
    }

    /// Applies an outcome while the request is paused, then lets it go.
    fn finish(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Reply(reply) => {
                self.reply(reply);
            }
            Outcome::Forward(fwd) => {
                for (name, value) in &fwd.request_headers {
                    set_header(MapType::HttpRequestHeaders, name, value);
                }
                if let Some(body) = &fwd.body {
                    // Envoy does not fix content-length after a body rewrite; a stale one makes
                    // the upstream wait for bytes that never come, or truncates the body.
                    if hostcalls::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body).is_ok() {
                        set_header(MapType::HttpRequestHeaders, "content-length", &body.len().to_string());
                    } else {
                        warn!("vane: cannot rewrite the request body");
                    }
                }
                let capture = fwd.ticket.map(|ticket| Capture { ticket, sse: false, body: Vec::new(), complete: false });
                self.state = State::Forwarded { response_headers: fwd.response_headers, capture };
                if hostcalls::resume_http_request().is_err() {
                    warn!("vane: cannot resume the request");
                }
            }
        }
    }

    /// The whole request body is buffered: check its size, parse it, ask the sidecar.
    fn route_buffered(&mut self) -> Action {
        let State::Buffering(facts) = std::mem::replace(&mut self.state, State::PassThrough) else {
            return Action::Continue;
        };
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX).ok().flatten().unwrap_or_default();
        if body.len() > self.config.max_body_bytes {
            return self.reply(decision::too_large(self.config.max_body_bytes));
        }
        self.route(facts, &body)
    }

    fn route(&mut self, facts: Facts, body: &[u8]) -> Action {
        let req = match ChatRequest::parse(body) {
            Ok(req) => req,
            Err(e) => return self.reply(decision::bad_request(&e)),
        };
        let msg = RouteRequest {
            request_id: facts.request_id.clone(),
            model: req.model.clone(),
            stream: req.stream,
            prompt: req.prompt.clone(),
            context: req.context.clone(),
            tenant: facts.tenant.clone(),
            cache_control: facts.cache_control as i32,
        }
        .encode_to_vec();
        let metadata = vec![("x-request-id", facts.request_id.as_bytes())];
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match hostcalls::dispatch_grpc_call(&self.config.sidecar_cluster, vane_proto::SERVICE, "Route", metadata, Some(&msg), timeout) {
            Ok(_token) => {
                self.state = State::Routing(facts, req, hostcalls::get_current_time().ok());
                Action::Pause
            }
            Err(e) => {
                warn!("vane: cannot call the sidecar: {e:?}");
                self.finish(decision::fallback(Fallback::SidecarUnavailable, self.config.failure_mode));
                match self.state {
                    State::Replied => Action::Pause,
                    _ => Action::Continue,
                }
            }
        }
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        let State::Routing(facts, req, sent_at) = std::mem::replace(&mut self.state, State::PassThrough) else {
            return;
        };
        let outcome = if status != 0 {
            let now = hostcalls::get_current_time().ok();
            let took = sent_at.zip(now).and_then(|(sent, now)| now.duration_since(sent).ok());
            let reason = decision::reason_for_grpc_status(status, took, Duration::from_millis(self.config.timeout_ms));
            info!("vane: request {} falls back: {reason} (gRPC {status})", facts.request_id);
            decision::fallback(reason, self.config.failure_mode)
        } else {
            let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size).ok().flatten().unwrap_or_default();
            match RouteDecision::decode(body.as_slice()) {
                Ok(d) => decision::apply(&req, d, facts.cache_control != CacheControl::Default),
                Err(e) => {
                    warn!("vane: undecodable sidecar reply: {e}");
                    decision::fallback(Fallback::SidecarBadReply, self.config.failure_mode)
                }
            }
        };
        self.finish(outcome);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let req = MapType::HttpRequestHeaders;
        // On every request, handled or not: a client must not pick the upstream cluster (Envoy
        // routes on x-vane-model) or forge a verdict by sending our headers itself.
        for name in OWN_REQUEST_HEADERS {
            if hostcalls::set_map_value(req, name, None).is_err() {
                warn!("vane: cannot remove header {name}");
            }
        }
        // Whatever its content-type: a chat body that is not JSON gets 400 rather than reaching
        // a model unjudged (upstreams such as vLLM read the body as JSON regardless).
        let is_post = header(req, ":method").as_deref() == Some("POST");
        let ours = is_post && header(req, ":path").is_some_and(|p| self.config.handles_path(&p));
        if !ours {
            return Action::Continue;
        }
        if end_of_stream {
            return self.reply(decision::bad_request(&BadRequest::empty_body()));
        }
        let too_long = header(req, "content-length").and_then(|l| l.trim().parse::<usize>().ok()).is_some_and(|l| l > self.config.max_body_bytes);
        if too_long {
            return self.reply(decision::too_large(self.config.max_body_bytes));
        }
        let map = request_header_map();
        let pairs = map.as_deref().and_then(decode_pairs);
        let tenant = match pairs.as_deref().map(|p| tenant::identify(&self.config, p)) {
            Some(Ok(tenant)) => tenant,
            Some(Err(e)) => return self.reply(decision::bad_request(&e)),
            None => {
                warn!("vane: unreadable request headers; the request is treated as anonymous");
                String::new()
            }
        };
        // Unreadable headers: no tenant is known, so no cache either way.
        let anonymous_cache = self.config.anonymous_cache && pairs.is_some();
        let cache_control = tenant::cache_control(header_bytes(req, "x-vane-cache-control").as_deref(), &tenant, anonymous_cache);
        self.state = State::Buffering(Facts { request_id: header(req, "x-request-id").unwrap_or_default(), tenant, cache_control });
        // Hold the headers too: the route is picked from headers we set after the decision.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::Buffering(_)) {
            return Action::Continue;
        }
        if body_size > self.config.max_body_bytes {
            return self.reply(decision::too_large(self.config.max_body_bytes));
        }
        if !end_of_stream {
            return Action::Pause; // Envoy keeps buffering; we look once the body is whole.
        }
        self.route_buffered()
    }

    /// A request with trailers (gRPC-style HTTP/2 clients) ends here, not with an end_of_stream
    /// body callback: route it now, or it would go upstream unjudged.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if !matches!(self.state, State::Buffering(_)) {
            return Action::Continue;
        }
        self.route_buffered()
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let (stores, limit) = (&self.stores, self.config.max_pending_stores);
        if let State::Forwarded { response_headers, capture } = &mut self.state {
            for (name, value) in response_headers.iter() {
                set_header(MapType::HttpResponseHeaders, name, value);
            }
            let resp = MapType::HttpResponseHeaders;
            let ok = header(resp, ":status").and_then(|s| s.parse::<u32>().ok()).is_some_and(|s| (200..300).contains(&s));
            if !ok {
                release(stores, limit, capture); // never cache an error
            } else if let Some(c) = capture {
                c.sse = header(resp, "content-type").is_some_and(|ct| ct.contains("text/event-stream"));
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (stores, limit) = (&self.stores, self.config.max_pending_stores);
        let State::Forwarded { capture, .. } = &mut self.state else {
            return Action::Continue;
        };
        let Some(c) = capture else {
            return Action::Continue;
        };
        // Each callback sees only the new chunk because we never hold the body back.
        if body_size > 0 {
            let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
            if c.body.len() + chunk.len() > self.config.max_response_bytes {
                debug!("vane: answer larger than max_response_bytes; not cached");
                release(stores, limit, capture);
                return Action::Continue;
            }
            c.body.extend_from_slice(&chunk);
        }
        if end_of_stream && !c.complete {
            c.complete = true;
            let msg = StoreRequest { ticket: std::mem::take(&mut c.ticket), response: std::mem::take(&mut c.body), sse: c.sse };
            send_later(stores, limit, "Store", msg.encode_to_vec());
        }
        Action::Continue
    }

    /// The stream is over. An answer that never reached its end (a client gone, an upstream
    /// reset, no body at all) will not be stored: release its ticket.
    fn on_log(&mut self) {
        if let State::Forwarded { capture, .. } = &mut self.state {
            release(&self.stores, self.config.max_pending_stores, capture);
        }
    }
}
