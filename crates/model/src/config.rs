//! `model:` — which encoder (its file, tokenizer, prefix and languages), its window, and how it
//! runs (threads, sessions, batching, device).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::language::Languages;

/// An encoder Vane ships: name, the prefix each text gets, the languages its embeddings stand for.
type Known = (&'static str, &'static str, fn() -> Languages);

/// The encoders Vane ships (models/README.md).
const KNOWN: &[Known] = &[
    ("minilm", "", Languages::default),
    ("multilingual-e5-small", "query: ", || Languages::All),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which encoder `onnx` is: heads record the encoder they were trained over, and one trained
    /// over another is refused. `minilm` (all-MiniLM-L6-v2, English) or `multilingual-e5-small`.
    #[serde(default = "defaults::encoder")]
    pub encoder: String,
    /// Put before every text, as the encoder was trained (`query: ` for E5); by default the
    /// encoder's own.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The languages the encoder's embeddings stand for, `all` or a list of codes (`[en, zh]`);
    /// by default the encoder's own (minilm: `[en]`, multilingual-e5-small: `all`). A prompt in
    /// another is never matched by the semantic cache, nor routed by the heads.
    #[serde(default)]
    pub languages: Option<Languages>,
    /// The encoder graph (see models/export.py): int8 by default, fp32 selectable.
    pub onnx: PathBuf,
    /// HuggingFace tokenizer.json matching the encoder.
    pub tokenizer: PathBuf,
    /// libonnxruntime.so; when absent, `$ORT_DYLIB_PATH`.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Longer prompts are truncated to this many tokens.
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: usize,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "defaults::threads")]
    pub threads: usize,
    /// Encoder sessions, each on its own thread, taking turns at the batch queue: more
    /// throughput on several cores at the same single-request latency (memory: one model each).
    #[serde(default = "defaults::encoders")]
    pub encoders: usize,
    /// Most prompts embedded in one encoder pass.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Most padded tokens (prompts x longest prompt) in one pass.
    #[serde(default = "defaults::max_batch_tokens")]
    pub max_batch_tokens: usize,
    /// How long a prompt may wait for others to share its pass (0: only those already queued).
    #[serde(default)]
    pub max_wait_us: u64,
    /// The longest an encoder pass should take: a batch stops growing before the measured cost
    /// per padded token says it would outlast this (0: no limit). What a prompt arriving behind
    /// a pass may wait, on any machine.
    #[serde(default = "defaults::max_pass_ms")]
    pub max_pass_ms: u64,
    /// Where the encoder runs: `cpu`, or `cuda` (needs the `cuda` build feature and a GPU).
    #[serde(default)]
    pub device: Device,
    /// Prompts waiting for the encoder; beyond it requests get RESOURCE_EXHAUSTED (the filter fails open).
    #[serde(default = "defaults::queue")]
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}
impl ModelConfig {
    fn known(&self) -> Option<&Known> {
        KNOWN.iter().find(|(name, ..)| *name == self.encoder)
    }

    /// What every text is prefixed with.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().or(self.known().map(|k| k.1)).unwrap_or("")
    }

    /// The languages the encoder reads.
    pub fn languages(&self) -> Languages {
        self.languages.clone().or(self.known().map(|k| k.2())).unwrap_or_default()
    }

    /// Every problem with this section, each as `model.<field>: <why>`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if self.known().is_none() && self.languages.is_none() {
            let names: Vec<_> = KNOWN.iter().map(|k| k.0).collect();
            errors.push(format!("model.languages: encoder '{}' is not one of {names:?}: say which languages it reads", self.encoder));
        }
        let mut check = |ok: bool, msg: &str| if !ok { errors.push(format!("model.{msg}")) };
        check(self.max_tokens >= 8 && self.max_tokens <= 512, "max_tokens: must be between 8 and 512");
        check(self.threads >= 1, "threads: must be at least 1");
        check((1..=64).contains(&self.encoders), "encoders: must be between 1 and 64");
        check(self.max_batch >= 1, "max_batch: must be at least 1");
        check(self.max_batch_tokens >= self.max_tokens, "max_batch_tokens: must be at least model.max_tokens");
        check(self.max_wait_us <= 100_000, "max_wait_us: must be at most 100000 (0.1 s)");
        check(self.max_pass_ms <= 10_000, "max_pass_ms: must be at most 10000 (10 s)");
        check(self.queue >= 1, "queue: must be at least 1");
    }

    /// Relative paths are taken from `base` (the directory of the config file).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.onnx, &mut self.tokenizer] {
            *p = base.join(&*p);
        }
        if let Some(p) = &mut self.onnxruntime {
            *p = base.join(&*p);
        }
    }
}

mod defaults {
    pub fn encoder() -> String { "minilm".into() }
    pub fn max_tokens() -> usize { 256 }
    pub fn threads() -> usize { 1 }
    pub fn encoders() -> usize { 2 }
    pub fn max_batch() -> usize { 32 }
    pub fn max_batch_tokens() -> usize { 8192 }
    pub fn max_pass_ms() -> u64 { 50 }
    pub fn queue() -> usize { 1024 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::language::Language;

    fn section(extra: &str) -> ModelConfig {
        serde_yaml_ng::from_str(&format!("onnx: m.onnx\ntokenizer: t.json\n{extra}")).unwrap()
    }

    #[test]
    fn an_encoder_brings_its_prefix_and_languages_unless_the_config_says_otherwise() {
        let minilm = section("");
        assert_eq!((minilm.encoder.as_str(), minilm.prefix(), minilm.languages()), ("minilm", "", Languages::Only(vec![Language::En])));
        let e5 = section("encoder: multilingual-e5-small\n");
        assert_eq!((e5.prefix(), e5.languages()), ("query: ", Languages::All));
        let narrowed = section("encoder: multilingual-e5-small\nlanguages: [en, zh]\nprefix: ''\n");
        assert_eq!((narrowed.prefix(), narrowed.languages()), ("", Languages::Only(vec![Language::En, Language::Zh])));
    }

    #[test]
    fn an_encoder_of_its_own_must_say_which_languages_it_reads() {
        let mut errors = Vec::new();
        section("encoder: my-bert\n").check(&mut errors);
        assert!(errors.iter().any(|e| e.starts_with("model.languages: encoder 'my-bert' is not one of")), "{errors:?}");
        let mut errors = Vec::new();
        section("encoder: my-bert\nlanguages: [de]\n").check(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
