//! Request signals computed beside the shared embedding: [`pii`] (pattern detectors with
//! checksums) and [`pii_policy`] (which model may receive which PII: block, route, redact). Learned signals (category, jailbreak) are heads over the embedding.

pub mod pii;
pub mod pii_eval;
pub mod pii_policy;
