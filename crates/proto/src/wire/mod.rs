//! What the filter and the sidecar must agree on byte for byte, kept in one place so the two
//! cannot drift: [`tenant`] (the cache partition of a credential), [`sse`] (replaying a cached
//! completion as a stream, and assembling a stream into a completion) and [`error`] (the
//! OpenAI error body). Plain functions, no I/O: they compile for wasm32 and natively.

pub mod error;
pub mod sse;
pub mod tenant;
