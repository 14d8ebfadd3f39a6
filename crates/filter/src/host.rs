//! The only module that talks to Envoy: glue between the proxy-wasm callbacks and the plain
//! modules that decide ([`admit`](crate::admit), [`decision`], [`capture`](crate::capture)).
//! It calls `proxy_wasm::hostcalls` directly because the SDK's trait helpers `unwrap()` host
//! results (and header values as UTF-8), and a panic kills the VM. Per request it is a small
//! state machine that reads from the host, asks those modules, and applies what they say.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use log::{info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

use crate::admit::{self, Admission, Facts, RequestHeaders};
use crate::capture::Capture;
use crate::config::Config;
use crate::decision::{self, Fallback, LocalReply, Outcome};
use crate::headers::{OWN_REQUEST_HEADERS, decode_pairs};
use crate::request::ChatRequest;
use crate::trace::Trace;
use vane_proto::v1::StoreRequest;

/// Encoded `Store` calls (message, the traceparent it joins) waiting for the root context's next
/// tick. They are sent from the root context because a call made by a stream's context is
/// cancelled when the stream ends, which is exactly when the answer is complete.
type StoreQueue = Rc<RefCell<VecDeque<(Vec<u8>, Option<String>)>>>;

/// The filter's own Envoy stats (in /stats/prometheus under these names: Envoy puts custom wasm
/// stats in the `wasmcustom` namespace, which its Prometheus output leaves off). Each worker's VM
/// defines them and Envoy keeps one stat per name, so the gauges are moved by increments, never
/// set: what each VM adds sums to the whole proxy's value.
#[derive(Clone, Copy, Default)]
struct Metrics {
    /// Store calls queued for the next tick (bounded by `max_pending_stores`).
    pending_stores: Option<u32>,
    /// Stores dropped because the queue was full.
    stores_dropped: Option<u32>,
    /// Requests holding a cache ticket while their answer is copied (at most one per request
    /// in flight; the sidecar keeps nothing per ticket).
    tickets_held: Option<u32>,
}

impl Metrics {
    fn define() -> Metrics {
        let define = |kind, name: &str| match hostcalls::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(e) => {
                warn!("vane: cannot define the metric {name}: {e:?}");
                None
            }
        };
        Metrics {
            pending_stores: define(MetricType::Gauge, "vane_filter_pending_stores"),
            stores_dropped: define(MetricType::Counter, "vane_filter_stores_dropped_total"),
            tickets_held: define(MetricType::Gauge, "vane_filter_tickets_held"),
        }
    }

    fn add(metric: Option<u32>, by: i64) {
        if let Some(id) = metric {
            // A stat that cannot move is not worth failing a request for.
            let _ = hostcalls::increment_metric(id, by);
        }
    }
}

#[derive(Default)]
pub struct Root {
    config: Rc<Config>,
    stores: StoreQueue,
    metrics: Metrics,
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, _size: usize) {
        if status != 0 {
            warn!("vane: cache store failed with gRPC status {status}");
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.metrics = Metrics::define();
        true
    }

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
        while let Some((msg, traceparent)) = self.stores.borrow_mut().pop_front() {
            Metrics::add(self.metrics.pending_stores, -1);
            let metadata = traceparent.iter().map(|tp| ("traceparent", tp.as_bytes())).collect();
            let sent = hostcalls::dispatch_grpc_call(self.config.sidecar_target(), vane_proto::SERVICE, "Store", metadata, Some(&msg), timeout);
            if let Err(e) = sent {
                warn!("vane: cannot send a cache Store: {e:?}");
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { config: self.config.clone(), stores: self.stores.clone(), metrics: self.metrics, state: State::PassThrough, ticket_held: false }))
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
    /// Sent upstream; decorate the response and copy it for the cache (the Store or Release
    /// joins `trace`).
    Forwarded { response_headers: Vec<(&'static str, String)>, capture: Capture, trace: Option<String> },
    /// We answered locally; our own reply also passes through the response callbacks.
    Replied,
}

struct Stream {
    config: Rc<Config>,
    stores: StoreQueue,
    metrics: Metrics,
    state: State,
    /// Whether this request counts in `vane_filter_tickets_held` (see [`Stream::count_ticket`]).
    ticket_held: bool,
}

impl Drop for Stream {
    /// A request that ends before its answer does (client gone, upstream reset) lets go here.
    fn drop(&mut self) {
        if self.ticket_held {
            Metrics::add(self.metrics.tickets_held, -1);
        }
    }
}

/// A header value as raw bytes (the SDK's string getter panics on non-UTF-8 values).
fn header_bytes(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

/// Every header of `map`, duplicates included, serialized (see `headers::decode_pairs`). The
/// SDK's `get_map_bytes` panics on a name that is not UTF-8, so this asks the host itself.
fn header_map(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer of `size` bytes that it allocated through
    // the SDK's `proxy_on_memory_allocate` (a boxed slice); we take ownership, as the SDK does.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    match status {
        0 if data.is_null() => Some(Vec::new()),
        0 => Some(unsafe { Vec::from_raw_parts(data, size, size) }),
        _ => None,
    }
}

/// The request headers as `admit` reads them.
struct EnvoyRequestHeaders;

impl RequestHeaders for EnvoyRequestHeaders {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        header_bytes(MapType::HttpRequestHeaders, name)
    }
    fn serialized(&self) -> Option<Vec<u8>> {
        header_map(MapType::HttpRequestHeaders)
    }
}

/// Queues a Store for the root context's next tick; beyond `limit` waiting it is dropped.
fn send_later(stores: &StoreQueue, limit: usize, call: Option<StoreRequest>, trace: &Option<String>, metrics: Metrics) {
    let Some(call) = call else { return };
    let mut stores = stores.borrow_mut();
    if stores.len() < limit {
        stores.push_back((call.encode_to_vec(), trace.clone()));
        Metrics::add(metrics.pending_stores, 1);
    } else {
        warn!("vane: too many pending cache writes; dropping a Store");
        Metrics::add(metrics.stores_dropped, 1);
    }
}

fn set_header(map: MapType, name: &str, value: &str) {
    if hostcalls::set_map_value(map, name, Some(value)).is_err() {
        warn!("vane: cannot set header {name}");
    }
}

impl Stream {
    /// Keeps `vane_filter_tickets_held` in step with the state: counted while an answer is
    /// being copied for its ticket, no longer once its Store is queued or it will not be stored.
    fn count_ticket(&mut self) {
        let held = matches!(&self.state, State::Forwarded { capture, .. } if capture.is_copying());
        if held != self.ticket_held {
            Metrics::add(self.metrics.tickets_held, if held { 1 } else { -1 });
            self.ticket_held = held;
        }
    }

    fn reply(&mut self, reply: LocalReply) -> Action {
        self.state = State::Replied;
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body)) {
            warn!("vane: cannot send a local reply: {e:?}");
        }
        Action::Pause
    }

    /// Applies an outcome while the request is paused, then lets it go.
    fn finish(&mut self, outcome: Outcome, trace: &Trace) {
        match outcome {
            Outcome::Reply(reply) => {
                self.reply(reply);
            }
            Outcome::Forward(fwd) => {
                for (name, value) in &fwd.request_headers {
                    set_header(MapType::HttpRequestHeaders, name, value);
                }
                if let Some(traceparent) = trace.upstream(fwd.route_span.as_deref()) {
                    set_header(MapType::HttpRequestHeaders, "traceparent", &traceparent);
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
                let trace = trace.cache_call_parent(fwd.route_span.as_deref());
                self.state = State::Forwarded { response_headers: fwd.response_headers, capture: Capture::new(fwd.ticket), trace };
                self.count_ticket();
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
        match admit::read_body(&self.config, &body) {
            Ok(req) => self.route(facts, req),
            Err(reply) => self.reply(reply),
        }
    }

    fn route(&mut self, facts: Facts, req: ChatRequest) -> Action {
        let msg = facts.route_request(&req).encode_to_vec();
        let mut metadata = vec![("x-request-id", facts.request_id.as_bytes())];
        metadata.extend(facts.trace.route_metadata());
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match hostcalls::dispatch_grpc_call(self.config.sidecar_target(), vane_proto::SERVICE, "Route", metadata, Some(&msg), timeout) {
            Ok(_token) => {
                self.state = State::Routing(facts, req, hostcalls::get_current_time().ok());
                Action::Pause
            }
            Err(e) => {
                warn!("vane: cannot call the sidecar: {e:?}");
                self.finish(decision::fallback(Fallback::SidecarUnavailable, self.config.failure_mode), &facts.trace);
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
            let reply = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size).ok().flatten().unwrap_or_default();
            decision::apply_reply(&req, &reply, facts.bypass(), self.config.failure_mode)
        };
        self.finish(outcome, &facts.trace);
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
        match admit::admit(&self.config, &EnvoyRequestHeaders, end_of_stream) {
            Admission::PassThrough => Action::Continue,
            Admission::Reply(reply) => self.reply(reply),
            Admission::Buffer(facts) => {
                self.state = State::Buffering(facts);
                // Hold the headers too: the route is picked from headers we set after the decision.
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.state, State::Buffering(_)) {
            return Action::Continue;
        }
        if let Some(reply) = admit::over_limit(&self.config, body_size) {
            return self.reply(reply);
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
        if let State::Forwarded { response_headers, capture, .. } = &mut self.state {
            let resp = MapType::HttpResponseHeaders;
            for (name, value) in response_headers.iter() {
                set_header(resp, name, value);
            }
            if capture.is_copying() {
                // Every Cache-Control line: the host's single-value getter gives only the first.
                let map = header_map(resp).unwrap_or_default();
                let pairs = decode_pairs(&map).unwrap_or_default();
                let cache_control: Vec<&[u8]> = pairs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(b"cache-control")).map(|(_, v)| *v).collect();
                capture.on_response_headers(header_bytes(resp, ":status").as_deref(), header_bytes(resp, "content-type").as_deref(), &cache_control);
            }
        }
        self.count_ticket();
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (stores, limit, metrics) = (&self.stores, self.config.max_pending_stores, self.metrics);
        let State::Forwarded { capture, trace, .. } = &mut self.state else {
            return Action::Continue;
        };
        if !capture.is_copying() {
            return Action::Continue;
        }
        // Each callback sees only the new chunk because we never hold the body back.
        let chunk = match body_size {
            0 => Vec::new(),
            n => hostcalls::get_buffer(BufferType::HttpResponseBody, 0, n).ok().flatten().unwrap_or_default(),
        };
        send_later(stores, limit, capture.on_response_body(&chunk, end_of_stream, self.config.max_response_bytes), trace, metrics);
        self.count_ticket();
        Action::Continue
    }
}
