//! The semantic cache: answers keyed by the meaning of the prompt, inside hard boundaries.
//!
//! An entry can only match a request with the same [`Partition`] (tenant and requested model)
//! and the same [`Fingerprint`] (hash of everything but the prompt: system prompt, earlier
//! turns, tools, sampling parameters). Within that, the prompt embeddings must reach the
//! similarity threshold.

pub mod memory;

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
}

/// A cached answer that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub completion: Vec<u8>,
    pub similarity: f32,
}
