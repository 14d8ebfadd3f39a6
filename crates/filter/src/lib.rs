//! Vane's Envoy filter: for each chat request, ask the sidecar what to do and do it.
//!
//! Everything but `host` is plain Rust with no proxy-wasm dependency, unit-tested natively:
//! [`config`] (the plugin configuration), [`admit`] (which requests are handled, what their
//! headers say, the Route request), [`request`] (parsing a chat request), [`decision`]
//! (decision → what to do, fallback reasons), [`capture`] (copying the answer for the cache's
//! Store), [`headers`] (what may become a header),
//! [`tenant`] (who is asking), [`trace`] (carrying the request's trace to the sidecar and the
//! model), [`url`]. The formats the sidecar must read or write the same way
//! (tenant keys, SSE replay, OpenAI error bodies) live in `vane_proto::wire`.

pub mod admit;
pub mod capture;
pub mod config;
pub mod decision;
pub mod headers;
pub mod request;
pub mod tenant;
pub mod trace;
pub mod url;

#[cfg(target_arch = "wasm32")]
mod host;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(host::Root::default()) });
}}
