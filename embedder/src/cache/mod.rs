//! The semantic cache: answers keyed by the meaning of the prompt, inside hard boundaries.
//!
//! An entry can only match a request with the same [`Partition`] (tenant and requested model)
//! and the same [`Fingerprint`] (hash of everything but the prompt: system prompt, earlier
//! turns, tools, sampling parameters). Within that, an identical prompt ([`PromptKey`]) is
//! answered by the exact tier without running the encoder; otherwise the prompt embeddings
//! must reach the similarity threshold.

pub mod backend;
pub mod eval;
pub mod guard;
pub mod memory;
pub mod milvus;

use sha2::{Digest, Sha256};

/// Hard boundary: nothing crosses it, whatever the similarity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    pub tenant: String,
    pub model: String,
}

/// Hash of the request's context (see the filter's `request` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(context: &str) -> Fingerprint {
        Fingerprint(Sha256::digest(context.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Hash of the prompt with whitespace normalised (runs collapsed, ends trimmed): the exact
/// tier's key. Case and punctuation are kept: they can change the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromptKey([u8; 32]);

impl PromptKey {
    pub fn of(prompt: &str) -> PromptKey {
        let mut hasher = Sha256::new();
        for (i, word) in prompt.split_whitespace().enumerate() {
            if i > 0 {
                hasher.update(b" ");
            }
            hasher.update(word.as_bytes());
        }
        PromptKey(hasher.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Exact,
    Semantic,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Exact => "exact",
            Tier::Semantic => "semantic",
        }
    }
}

/// A cached answer that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub tier: Tier,
    pub id: u64,
    pub completion: Vec<u8>,
    pub similarity: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_keys_ignore_whitespace_only() {
        assert_eq!(PromptKey::of("What is  2+2?\n"), PromptKey::of(" What is 2+2?"));
        assert_ne!(PromptKey::of("What is 2+2?"), PromptKey::of("what is 2+2?"));
        assert_ne!(PromptKey::of("a b"), PromptKey::of("ab"));
    }
}
