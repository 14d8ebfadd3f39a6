//! The contract between the wasm filter and the sidecar: the gRPC service (`vane.v1.Sidecar`)
//! and, in [`wire`], the formats both sides must produce identically (tenant keys, SSE,
//! OpenAI error bodies).
//!
//! The filter (wasm32) uses only the prost messages and sends them with the host's
//! `dispatch_grpc_call`; the sidecar enables the `grpc` feature for the tonic server.

/// Full gRPC service name, as the filter passes it to `dispatch_grpc_call`.
pub const SERVICE: &str = "vane.v1.Sidecar";

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/vane.v1.rs"));
}

pub mod wire;
