//! The Vane sidecar, organised around its seams:
//! [`model`] (the encoder; ONNX Runtime lives only in `model::onnx`), [`batching`] (the encoder
//! thread and its queue), [`routing`] (category, model and reasoning decision, conversations),
//! [`cache`] (semantic cache backends), [`completion`] (what is cacheable), [`router`] (one
//! Route call: cache tiers, then routing), [`server`] (gRPC),
//! [`admin`] and [`metrics`] (operations), [`config`]; [`head`] (trained classifier heads over the
//! embedding), [`dataset`] and [`eval`] (their training data and metrics).

pub mod admin;
pub mod batching;
pub mod cache;
pub mod commands;

pub mod completion;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod head;
pub mod metrics;
pub mod model;
pub mod router;
pub mod routing;
pub mod server;
pub mod signals;
pub mod tickets;
