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

/// Turns text into the encoder's token ids; shareable, so tokenising runs on its own thread.
pub type Tokenizer = std::sync::Arc<dyn Fn(&str) -> Result<Vec<u32>, ModelError> + Send + Sync>;

/// A batch encoder: one unit-length vector per input, in order.
pub trait Encoder: Send {
    fn dim(&self) -> usize;
    fn tokenizer(&self) -> Tokenizer;
    /// Runs the model on already tokenised inputs.
    fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError>;

    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let tokenize = self.tokenizer();
        let batch = texts.iter().map(|t| tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        self.encode(&batch)
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
