//! Request signals computed beside the shared embedding: [`pii`] (pattern detectors with
//! checksums). Learned signals (category, jailbreak) are heads over the embedding.

pub mod pii;
pub mod pii_eval;
