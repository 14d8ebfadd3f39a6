//! Request signals computed beside the shared embedding: [`pii`] (pattern detectors with
//! checksums), [`pii_policy`] (which model may receive which PII: block, route, redact) and
//! [`jailbreak`] (a head over the embedding, windowed over long prompts).

pub mod jailbreak;
pub mod pii;
pub mod pii_eval;
pub mod pii_policy;
