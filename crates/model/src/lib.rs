//! The sentence encoder: text in, one L2-normalised embedding out, shared by every signal.
//!
//! [`Encoder`] is synchronous and owned by one thread ([`crate::batching`]); [`onnx`] is the
//! only module that imports ONNX Runtime.

pub mod batching;
pub mod config;
pub mod head;
pub mod language;
pub mod metrics;
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
pub type Tokenizer = std::sync::Arc<dyn Fn(&str) -> Result<Tokens, ModelError> + Send + Sync>;

/// A text as the encoder reads it: the ids it runs on, and how much of the text they cover.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub reading: Reading,
}

/// How much of a text the encoder could read. Its vocabulary lacks most Chinese characters,
/// kana, hangul and emoji: such text becomes `[UNK]` tokens, and two prompts that differ only
/// there embed identically ("[UNK] 朝 [UNK] [UNK] 一 年 ..." is both the Qin and the Tang dynasty).
/// Counted from the tokenisation the encoder needs anyway, so it costs nothing to know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Tokens of the text, special tokens aside, before truncation (of a very long text, of the
    /// head the tokeniser was given: 64 bytes per window token).
    pub tokens: u32,
    /// Of those, the ones the vocabulary has no entry for.
    pub unknown: u32,
    /// The text was longer than the encoder's window: its end was not read at all.
    pub truncated: bool,
    /// The text's language ([`language::detect`]).
    pub language: language::Language,
    /// The text is not in a language the encoder reads (`model.languages`): its embedding is no
    /// evidence of what it asks ("秦朝是哪一年建立的" read by an English encoder).
    pub foreign: bool,
}

/// Why an embedding does not stand for the whole text (`Reading::unread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// More than the allowed share of the tokens were unknown to the vocabulary.
    UnknownTokens,
    /// Not in a language the encoder reads.
    Language,
    /// The text ran past the encoder's window.
    Truncated,
}

impl Unread {
    /// The label in metrics, `/v1/classify` and `eval-cache`.
    pub fn name(self) -> &'static str {
        match self {
            Unread::UnknownTokens => "unknown_tokens",
            Unread::Language => "language",
            Unread::Truncated => "truncated",
        }
    }
}

impl Reading {
    /// Unknown tokens as a share of all (0 for an empty text).
    pub fn unknown_share(&self) -> f32 {
        if self.tokens == 0 { 0.0 } else { self.unknown as f32 / self.tokens as f32 }
    }

    /// Whether too much of the text was unknown, or its language is not the encoder's, for its
    /// embedding to say what it asks.
    pub fn unreadable(&self, max_unknown_share: f32) -> bool {
        self.unknown_share() > max_unknown_share || self.foreign
    }

    /// What keeps the embedding from standing for the whole text, if anything: the semantic
    /// cache may match a text only on its embedding when this is `None`.
    pub fn unread(&self, max_unknown_share: f32) -> Option<Unread> {
        if self.unknown_share() > max_unknown_share {
            Some(Unread::UnknownTokens)
        } else if self.foreign {
            Some(Unread::Language)
        } else if self.truncated {
            Some(Unread::Truncated)
        } else {
            None
        }
    }
}

/// A batch encoder: one unit-length vector per input, in order.
pub trait Encoder: Send {
    fn dim(&self) -> usize;
    fn tokenizer(&self) -> Tokenizer;
    /// Runs the model on already tokenised inputs.
    fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError>;

    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let tokenize = self.tokenizer();
        let batch = texts.iter().map(|t| tokenize(t).map(|t| t.ids)).collect::<Result<Vec<_>, _>>()?;
        self.encode(&batch)
    }
}

/// Cosine similarity of two unit vectors: their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b)
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A tokenizer for tests (here and in the crates above): one id per byte; non-ASCII bytes are
/// unknown, as CJK text is to MiniLM, whose languages (English) it reads.
pub fn byte_tokenizer() -> Tokenizer {
    std::sync::Arc::new(|t: &str| {
        let ids: Vec<u32> = t.bytes().map(u32::from).collect();
        let detected = language::detect(t);
        let foreign = !language::Languages::default().reads(&detected);
        let reading = Reading { tokens: ids.len() as u32, unknown: ids.iter().filter(|&&b| b >= 0x80).count() as u32, truncated: false, language: detected.language, foreign };
        Ok(Tokens { ids, reading })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_unread_when_too_much_is_unknown_or_the_end_was_cut() {
        let r = |tokens, unknown, truncated| Reading { tokens, unknown, truncated, ..Reading::default() };
        assert_eq!(r(0, 0, false).unknown_share(), 0.0);
        assert_eq!(r(10, 5, false).unknown_share(), 0.5);
        assert_eq!(r(10, 0, false).unread(0.1), None);
        assert_eq!(r(10, 1, false).unread(0.1), None, "at the bound is still readable");
        assert_eq!(r(10, 2, false).unread(0.1), Some(Unread::UnknownTokens));
        assert_eq!(r(300, 0, true).unread(0.1), Some(Unread::Truncated));
        assert_eq!(r(300, 200, true).unread(0.1), Some(Unread::UnknownTokens), "the unknown tokens are named first");
        let foreign = Reading { tokens: 10, foreign: true, ..Reading::default() };
        assert_eq!(foreign.unread(0.1), Some(Unread::Language));
        assert!(foreign.unreadable(0.1), "nor is it routed on");
    }
}
