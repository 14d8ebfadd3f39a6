//! MiniLM through ONNX Runtime (`ort`, loaded dynamically from the onnxruntime wheel).
//!
//! The graph (models/export.py) takes `input_ids`, `attention_mask`, `token_type_ids` and does
//! mean pooling and L2 normalisation itself, returning `sentence_embedding` [batch, dim].

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::Tensor;
use super::{Encoder, ModelError, Reading, Tokenizer, Tokens};
use crate::config::{Device, ModelConfig};
use crate::language::{self, Languages};

/// The most bytes of a text the tokeniser sees per token of the window: English averages ~4,
/// CJK 3, so a cut here leaves several windows' worth, while a 1 MiB prompt no longer costs a
/// full tokenisation (hundreds of MiB of transient offsets and strings) to read 256 tokens.
const BYTES_PER_WINDOW_TOKEN: usize = 64;

pub struct OnnxEncoder {
    session: Session,
    tokenizer: std::sync::Arc<tokenizers::Tokenizer>,
    /// The vocabulary's unknown token (`[UNK]` in BERT's WordPiece, `<unk>` in SentencePiece).
    unknown: Option<u32>,
    max_tokens: usize,
    dim: usize,
    /// `model.prefix`, and how many tokens it makes (not counted in a text's reading).
    prefix: std::sync::Arc<str>,
    prefix_tokens: u32,
    languages: std::sync::Arc<Languages>,
}

fn load_err(path: &Path, e: impl ToString) -> ModelError {
    ModelError::Load { path: path.into(), message: e.to_string() }
}

impl OnnxEncoder {
    /// `model.encoders` sessions of the configured model.
    pub fn load_all(cfg: &ModelConfig) -> Result<Vec<Box<dyn Encoder>>, ModelError> {
        (0..cfg.encoders.max(1)).map(|_| OnnxEncoder::load(cfg).map(|e| Box::new(e) as Box<dyn Encoder>)).collect()
    }

    pub fn load(cfg: &ModelConfig) -> Result<OnnxEncoder, ModelError> {
        let session = Session::builder(environment(cfg)?)
            .and_then(|b| with_device(b, cfg.device))
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
            .and_then(|b| Ok(b.with_intra_threads(cfg.threads)?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|mut b| b.commit_from_file(&cfg.onnx))
            .map_err(|e| load_err(&cfg.onnx, e))?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(&cfg.tokenizer).map_err(|e| load_err(&cfg.tokenizer, e))?;
        // Truncated below instead (max_tokens), so that a text's reading counts all of it.
        tokenizer.with_truncation(None).map_err(|e| load_err(&cfg.tokenizer, e))?;
        let unknown = ["[UNK]", "<unk>"].into_iter().find_map(|t| tokenizer.token_to_id(t));
        let prefix = cfg.prefix();
        let prefix_tokens = tokenizer.encode(prefix, false).map_err(|e| load_err(&cfg.tokenizer, e))?.get_ids().len() as u32;
        let (prefix, languages) = (prefix.into(), cfg.languages().into());
        let mut encoder = OnnxEncoder { session, tokenizer: tokenizer.into(), unknown, max_tokens: cfg.max_tokens, dim: 0, prefix, prefix_tokens, languages };
        encoder.dim = encoder.embed(&["warm up"])?.first().map_or(0, Vec::len);
        Ok(encoder)
    }
}

/// `cuda` registers the CUDA execution provider and fails (rather than silently running on the
/// CPU) when it cannot: a GPU deployment that quietly fell back would be slow and look fine.
#[cfg(feature = "cuda")]
fn with_device(b: ort::session::builder::SessionBuilder, device: Device) -> ort::Result<ort::session::builder::SessionBuilder> {
    match device {
        Device::Cpu => Ok(b),
        Device::Cuda => b.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()]).map_err(|e| ort::Error::new(format!("CUDA execution provider: {e}"))),
    }
}

#[cfg(not(feature = "cuda"))]
fn with_device(b: ort::session::builder::SessionBuilder, device: Device) -> ort::Result<ort::session::builder::SessionBuilder> {
    match device {
        Device::Cpu => Ok(b),
        Device::Cuda => Err(ort::Error::new("model.device is cuda but this binary was built without the `cuda` feature (cargo build --features cuda)")),
    }
}

/// ONNX Runtime allows one environment per process; every encoder shares it.
fn environment(cfg: &ModelConfig) -> Result<&'static Environment, ModelError> {
    static ENV: OnceLock<Result<Environment, ModelError>> = OnceLock::new();
    let lib = cfg.onnxruntime.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(Into::into)).ok_or(ModelError::NoRuntime)?;
    let env = ENV.get_or_init(|| {
        let runtime_err = |e: &dyn ToString| ModelError::Runtime { path: lib.clone(), message: e.to_string() };
        ort::init_from(&lib).map_err(|e| runtime_err(&e))?.with_name("vane").build().map_err(|e| runtime_err(&e))
    });
    env.as_ref().map_err(|e| ModelError::Runtime { path: lib, message: e.to_string() })
}

/// At most `max` bytes of `text`, cut at a character boundary, and whether anything was cut.
fn head(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let end = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    (&text[..end], true)
}

impl Encoder for OnnxEncoder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn tokenizer(&self) -> Tokenizer {
        let (tokenizer, unknown, max) = (self.tokenizer.clone(), self.unknown, self.max_tokens);
        let (prefix, prefix_tokens, languages) = (self.prefix.clone(), self.prefix_tokens, self.languages.clone());
        std::sync::Arc::new(move |text: &str| {
            let (text, cut) = head(text, max * BYTES_PER_WINDOW_TOKEN);
            let detected = language::detect(text);
            let enc = match prefix.is_empty() {
                true => tokenizer.encode(text, true),
                false => tokenizer.encode(format!("{prefix}{text}"), true),
            }
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
            let ids = enc.get_ids();
            let special = enc.get_special_tokens_mask();
            let reading = Reading {
                tokens: (special.iter().filter(|&&s| s == 0).count() as u32).saturating_sub(prefix_tokens),
                unknown: ids.iter().zip(special).filter(|&(&id, &s)| s == 0 && Some(id) == unknown).count() as u32,
                truncated: cut || ids.len() > max,
                language: detected.language,
                foreign: !languages.reads(&detected),
            };
            if ids.len() <= max {
                return Ok(Tokens { ids: ids.to_vec(), reading });
            }
            // Truncated: keep the closing [SEP] the model was trained with.
            let mut kept = ids[..max].to_vec();
            if let (Some(last), Some(&sep)) = (kept.last_mut(), ids.last()) {
                *last = sep;
            }
            Ok(Tokens { ids: kept, reading })
        })
    }

    fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Pad to the longest input in this batch, not to a fixed length: short prompts stay cheap.
        let len = batch.iter().map(Vec::len).max().unwrap_or(1).clamp(1, self.max_tokens);
        let n = batch.len();
        let (mut ids, mut mask, types) = (vec![0i64; n * len], vec![0i64; n * len], vec![0i64; n * len]);
        for (row, tokens) in batch.iter().enumerate() {
            for (col, &id) in tokens.iter().take(len).enumerate() {
                ids[row * len + col] = i64::from(id);
                mask[row * len + col] = 1;
            }
        }
        let shape = [n, len];
        let tensor = |v: Vec<i64>| Tensor::from_array((shape, v)).map_err(|e| ModelError::Inference(e.to_string()));
        let inputs = ort::inputs![
            "input_ids" => tensor(ids)?,
            "attention_mask" => tensor(mask)?,
            "token_type_ids" => tensor(types)?,
        ];
        let outputs = self.session.run(inputs).map_err(|e| ModelError::Inference(e.to_string()))?;
        let (out_shape, data) = outputs["sentence_embedding"].try_extract_tensor::<f32>().map_err(|e| ModelError::Inference(e.to_string()))?;
        let dim = out_shape.get(1).copied().unwrap_or(0) as usize;
        if dim == 0 || data.len() != n * dim {
            return Err(ModelError::Inference(format!("unexpected output shape {out_shape:?}")));
        }
        Ok(data.chunks(dim).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::head;

    #[test]
    fn the_tokeniser_sees_a_bounded_head_cut_at_a_character() {
        assert_eq!(head("short", 64), ("short", false));
        assert_eq!(head("秦朝秦朝", 7), ("秦朝", true), "3-byte characters are never split");
        assert_eq!(head(&"x".repeat(100), 10), ("xxxxxxxxxx", true));
    }
}
