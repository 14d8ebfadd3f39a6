//! Makes a cacheable `chat.completion` out of an upstream answer, or says why it is not one.
//!
//! A JSON answer must be a completion whose every choice finished. A streamed answer is
//! assembled from its `chat.completion.chunk` events by [`vane_proto::wire::sse::assemble`]
//! (beside the filter's replay, so that the two cannot drift) and must end with `data: [DONE]`
//! and a finish reason per choice: a truncated stream is never stored.

use serde_json::Value;
pub use vane_proto::wire::sse::{Incomplete, assemble as from_sse};

/// Checks a JSON answer; returns it unchanged when it is a finished completion.
pub fn from_json(body: &[u8]) -> Result<Vec<u8>, Incomplete> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Incomplete::NotACompletion)?;
    let choices = v.get("choices").and_then(Value::as_array).ok_or(Incomplete::NotACompletion)?;
    if v.get("object").and_then(Value::as_str) != Some("chat.completion") || choices.is_empty() {
        return Err(Incomplete::NotACompletion);
    }
    if choices.iter().any(|c| c.get("finish_reason").is_none_or(Value::is_null)) {
        return Err(Incomplete::Unfinished);
    }
    Ok(body.to_vec())
}

/// What a trace says about a completion (GenAI conventions): the model that answered and the
/// tokens it counted (`usage`), when the answer says.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
}

/// The [`Summary`] of a `chat.completion` (as [`from_json`] or [`from_sse`] made it).
pub fn summary(completion: &[u8]) -> Summary {
    #[derive(serde::Deserialize)]
    struct Usage {
        prompt_tokens: Option<i64>,
        completion_tokens: Option<i64>,
    }
    #[derive(serde::Deserialize)]
    struct Completion {
        model: Option<String>,
        usage: Option<Usage>,
    }
    let Ok(c) = serde_json::from_slice::<Completion>(completion) else { return Summary::default() };
    let usage = c.usage.unwrap_or(Usage { prompt_tokens: None, completion_tokens: None });
    Summary { model: c.model, input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_the_model_and_usage() {
        let c = br#"{"object":"chat.completion","model":"m-1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(summary(c), Summary { model: Some("m-1".into()), input_tokens: Some(12), output_tokens: Some(5) });
        assert_eq!(summary(br#"{"object":"chat.completion","choices":[]}"#), Summary::default());
        assert_eq!(summary(b"not json"), Summary::default());
    }

    #[test]
    fn json_answers_must_be_finished_completions() {
        let ok = br#"{"object":"chat.completion","choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}]}"#;
        assert!(from_json(ok).is_ok());
        assert_eq!(from_json(b"{\"error\":{}}"), Err(Incomplete::NotACompletion));
        assert_eq!(from_json(b"{\"object\":\"chat.completion\",\"choices\":[{\"finish_reason\":null}]}"), Err(Incomplete::Unfinished));
        assert_eq!(from_json(b"{\"object\":\"chat.completion\",\"choi"), Err(Incomplete::NotACompletion));
    }
}
