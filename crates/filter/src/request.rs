//! Reads an OpenAI chat request: only what routing and caching need.
//!
//! The prompt is the text of the last user message. Everything else that shapes the answer
//! (system prompt, earlier turns, tools, sampling parameters, non-text parts of the prompt) goes
//! into `context`, a canonical JSON string (sorted keys, no whitespace) that the cache compares
//! exactly. Fields that do not change the answer (`model`, which is a partition of its own,
//! `stream`, `stream_options`, `user`) stay out of it.

use serde_json::{Map, Value};

use crate::headers::is_valid_value;

/// Longest model name accepted; it travels in a header, and real names are far shorter.
pub const MAX_MODEL_LEN: usize = 256;

/// Top-level fields that never change the content of the answer.
const NOT_CONTEXT: [&str; 4] = ["model", "stream", "stream_options", "user"];

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a replayed stream ends with a usage chunk.
    pub include_usage: bool,
    pub prompt: String,
    pub context: String,
    /// The whole body, kept to rewrite `model` without parsing twice.
    body: Map<String, Value>,
}

/// Why a body is not a chat request we can handle: always the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub message: String,
    pub param: Option<&'static str>,
}

impl BadRequest {
    pub fn empty_body() -> BadRequest {
        bad("The request body is empty; expected a JSON chat completion request.", None)
    }
}

fn bad(message: impl Into<String>, param: Option<&'static str>) -> BadRequest {
    BadRequest { message: message.into(), param }
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, BadRequest> {
        if body.is_empty() {
            return Err(BadRequest::empty_body());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad(format!("The request body is not valid JSON: {e}."), None))?;
        let Value::Object(body) = value else {
            return Err(bad("The request body must be a JSON object.", None));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if m.len() > MAX_MODEL_LEN || !is_valid_value(m) => {
                // The name becomes the x-vane-model header: CR/LF would split the response.
                return Err(bad(
                    format!("'model' must be a model name of at most {MAX_MODEL_LEN} bytes without control characters or surrounding spaces."),
                    Some("model"),
                ));
            }
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => return Err(bad("'model' must be a non-empty string.", Some("model"))),
            None => return Err(bad("You must provide a model parameter.", Some("model"))),
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("'stream' must be a boolean.", Some("stream"))),
        };
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let messages = match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => return Err(bad("'messages' must not be empty.", Some("messages"))),
            Some(_) => return Err(bad("'messages' must be an array of messages.", Some("messages"))),
            None => return Err(bad("Missing required parameter: 'messages'.", Some("messages"))),
        };
        let mut last_user = None;
        for (i, m) in messages.iter().enumerate() {
            match m.get("role") {
                Some(Value::String(role)) if role == "user" => last_user = Some(i),
                Some(Value::String(_)) => {}
                _ => return Err(bad(format!("messages[{i}] must be an object with a string 'role'."), Some("messages"))),
            }
        }

        let mut context = body.clone();
        for field in NOT_CONTEXT {
            context.remove(field);
        }
        let mut prompt = String::new();
        let last = last_user.zip(context.get_mut("messages")).and_then(|(i, msgs)| Some((i, msgs.get_mut(i)?.as_object_mut()?)));
        if let Some((i, msg)) = last {
            let (text, rest) = split_content(msg.get("content"), i)?;
            prompt = text;
            // The prompt's text is matched by meaning; whatever else it carries (images,
            // files) must match exactly, so it stays in the context.
            msg.insert("content".into(), rest);
        }
        let context = serde_json::to_string(&context).map_err(|e| bad(format!("Cannot serialise the request: {e}."), None))?;
        Ok(ChatRequest { model, stream, include_usage, prompt, context, body })
    }

    /// The body with `model` replaced (when given) and a JSON merge patch (RFC 7396) applied:
    /// what goes upstream after a routing decision.
    pub fn rewritten_body(&self, model: Option<&str>, patch: Option<&Map<String, Value>>) -> Vec<u8> {
        let mut body = self.body.clone();
        if let Some(patch) = patch {
            merge_patch(&mut body, patch);
        }
        if let Some(model) = model {
            body.insert("model".into(), Value::String(model.into()));
        }
        // Serialising a Map of Values cannot fail (string keys only).
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// RFC 7396: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(obj) = slot {
                    merge_patch(obj, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Splits a message's content into its text (parts joined by newlines) and its non-text parts.
fn split_content(content: Option<&Value>, i: usize) -> Result<(String, Value), BadRequest> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), Value::Null)),
        Some(Value::String(s)) => Ok((s.clone(), Value::Array(Vec::new()))),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut others = Vec::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some(_), _) => others.push(part.clone()),
                    (None, _) => {
                        return Err(bad(format!("messages[{i}].content parts must be objects with a 'type'."), Some("messages")));
                    }
                }
            }
            Ok((texts.join("\n"), Value::Array(others)))
        }
        Some(_) => Err(bad(format!("messages[{i}].content must be a string or an array of content parts."), Some("messages"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ChatRequest, BadRequest> {
        ChatRequest::parse(s.as_bytes())
    }

    #[test]
    fn reads_model_stream_and_last_user_prompt() {
        let r = parse(r#"{"model":"auto","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first"},
                        {"role":"assistant","content":"ok"},{"role":"user","content":"What is 2+2?"}]}"#)
        .unwrap();
        assert_eq!(r.model, "auto");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.prompt, "What is 2+2?");
        assert!(r.context.contains("be brief") && r.context.contains("first"));
        assert!(!r.context.contains("What is 2+2?"));
    }

    #[test]
    fn content_parts_give_text_and_keep_the_rest_in_context() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":[
            {"type":"text","text":"describe"},{"type":"image_url","image_url":{"url":"data:x"}},
            {"type":"text","text":"this"}]}]}"#)
        .unwrap();
        assert_eq!(r.prompt, "describe\nthis");
        assert!(r.context.contains("data:x"));
    }

    #[test]
    fn context_ignores_model_stream_user_and_key_order() {
        let a = parse(r#"{"model":"a","stream":true,"user":"u1","temperature":0.2,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let b = parse(r#"{"messages":[{"content":"hello","role":"user"}],"temperature":0.2,"model":"b"}"#).unwrap();
        assert_eq!(a.context, b.context);
        let c = parse(r#"{"model":"a","temperature":0.9,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_ne!(a.context, c.context, "sampling parameters change the answer");
        let d = parse(r#"{"model":"a","temperature":0.2,"messages":[{"role":"system","content":"pirate"},{"role":"user","content":"hi"}]}"#).unwrap();
        assert_ne!(a.context, d.context, "a system prompt changes the answer");
    }

    #[test]
    fn rewrites_model_and_keeps_unknown_fields() {
        let r = parse(r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"vendor_ext":{"a":1}}"#).unwrap();
        let out: Value = serde_json::from_slice(&r.rewritten_body(Some("math-model"), None)).unwrap();
        assert_eq!(out["model"], "math-model");
        assert_eq!(out["vendor_ext"]["a"], 1);
        assert_eq!(out["messages"][0]["content"], "x");
    }

    #[test]
    fn no_user_message_means_empty_prompt() {
        let r = parse(r#"{"model":"m","messages":[{"role":"system","content":"s"}]}"#).unwrap();
        assert_eq!(r.prompt, "");
    }

    #[test]
    fn bad_bodies_are_rejected_with_a_reason() {
        for (body, needle) in [
            ("", "empty"),
            ("{not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#, "model"),
            ("{\"model\":\"x\\r\\nSet-Cookie: a=1\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "control characters"),
            ("{\"model\":\"a\\u0000b\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "control characters"),
            ("{\"model\":\"a\\u007f\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "control characters"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "must not be empty"),
            (r#"{"model":"m","messages":"hi"}"#, "array"),
            (r#"{"model":"m","messages":[{"content":"x"}]}"#, "role"),
            (r#"{"model":"m","messages":[42]}"#, "role"),
            (r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#, "stream"),
            (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "content"),
            (r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#, "type"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.message.contains(needle), "{body:?}: {err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn a_model_name_that_cannot_be_a_header_is_refused() {
        let body = |model: &str| serde_json::json!({"model": model, "messages": [{"role": "user", "content": "x"}]}).to_string();
        for model in ["x\r\nSet-Cookie: a=1", "x\r\n\r\nHTTP/1.1 200 OK", "a\0b", "a\u{7f}", " auto", &"m".repeat(MAX_MODEL_LEN + 1)] {
            let err = parse(&body(model)).unwrap_err();
            assert_eq!(err.param, Some("model"), "{model:?}");
        }
        assert_eq!(parse(&body(&"m".repeat(MAX_MODEL_LEN))).unwrap().model.len(), MAX_MODEL_LEN);
    }

    #[test]
    fn invalid_utf8_is_a_bad_request_not_a_panic() {
        let err = ChatRequest::parse(b"{\"model\":\"m\xff\",\"messages\":[]}").unwrap_err();
        assert!(err.message.contains("JSON"));
    }

    #[test]
    fn merge_patch_adds_merges_and_removes() {
        let r = ChatRequest::parse(br#"{"model":"auto","messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":{"foo":1},"reasoning_effort":"low","top_p":1}"#).unwrap();
        let patch: Map<String, Value> = serde_json::from_str(r#"{"chat_template_kwargs":{"enable_thinking":true},"reasoning_effort":"high","top_p":null}"#).unwrap();
        let out: Value = serde_json::from_slice(&r.rewritten_body(Some("qwen3"), Some(&patch))).unwrap();
        assert_eq!(out["model"], "qwen3");
        assert_eq!(out["chat_template_kwargs"], serde_json::json!({"foo": 1, "enable_thinking": true}));
        assert_eq!(out["reasoning_effort"], "high");
        assert!(out.get("top_p").is_none());
        assert_eq!(out["messages"][0]["content"], "hi");
        // A non-object in the way is replaced, and a patch cannot rename the model.
        let r = ChatRequest::parse(br#"{"model":"auto","messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":"x"}"#).unwrap();
        let patch: Map<String, Value> = serde_json::from_str(r#"{"chat_template_kwargs":{"thinking":false},"model":"evil"}"#).unwrap();
        let out: Value = serde_json::from_slice(&r.rewritten_body(Some("deepseek"), Some(&patch))).unwrap();
        assert_eq!(out["chat_template_kwargs"], serde_json::json!({"thinking": false}));
        assert_eq!(out["model"], "deepseek");
    }
}
