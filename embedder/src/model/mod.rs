//! The sentence encoder: text in, one L2-normalised embedding out, shared by every signal.
//!
//! [`Encoder`] is synchronous and owned by one thread ([`crate::batching`]); [`onnx`] is the
//! only module that imports ONNX Runtime.

pub mod onnx;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load ONNX Runtime from {path}: {message} (run `make venv`, or set model.onnxruntime / ORT_DYLIB_PATH)")]
    Runtime { path: PathBuf, message: String },
    #[error("no ONNX Runtime library given: set model.onnxruntime or ORT_DYLIB_PATH")]
    NoRuntime,
    #[error("cannot load {path}: {message} (run `make models`)")]
    Load { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("inference: {0}")]
    Inference(String),
}

/// A batch encoder. `embed` returns one unit-length vector per text, in order.
pub trait Encoder: Send {
    fn dim(&self) -> usize;
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
