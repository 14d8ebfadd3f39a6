//! The Vane sidecar: what the filter calls, composed from the areas below it.
//!
//! - [`pipeline`]: one Route (jailbreak budget, cache tiers, the encoder pass, routing, PII),
//!   Store and Release;
//! - [`server`] (the gRPC service), [`admin`] (metrics, health) and [`api`] (`/v1/classify`,
//!   the cache's admin API);
//! - [`tickets`] (what Route computed, kept until Store or Release) and [`completion`] (what
//!   answer is complete enough to cache);
//! - [`config`] (the sections composed and checked at once), [`reload`] (what changes while it
//!   runs: SIGHUP and the file watched), [`metrics`] (every area's families in one registry) and
//!   [`telemetry`] (traces over OTLP, logs).
//!
//! The areas are crates of their own: `vane-model` (the encoder; ONNX Runtime lives only there),
//! `vane-cache` (both backends, the guard), `vane-routing` (the decision, PII, jailbreak). The
//! offline tools are the `vane` binary (`vane-tools`).

pub mod admin;
pub mod api;
pub mod completion;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tickets;
