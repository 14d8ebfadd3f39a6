//! Makes a cacheable `chat.completion` out of an upstream answer, or says why it is not one.
//!
//! A JSON answer must be a completion whose every choice finished. A streamed answer is
//! assembled from its `chat.completion.chunk` events (content, tool-call deltas, usage) and must
//! end with `data: [DONE]` and a finish reason per choice: a truncated stream is never stored.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    #[error("not a chat.completion")]
    NotACompletion,
    #[error("a choice has no finish_reason")]
    Unfinished,
    #[error("the stream has no [DONE]")]
    NoDone,
    #[error("a stream event is not valid JSON")]
    BadEvent,
}

impl Incomplete {
    pub fn label(&self) -> &'static str {
        match self {
            Incomplete::NotACompletion => "not_a_completion",
            Incomplete::Unfinished => "unfinished",
            Incomplete::NoDone => "truncated_stream",
            Incomplete::BadEvent => "bad_event",
        }
    }
}

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

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Option<Value>,
}

/// Assembles an SSE stream of chunks into one completion JSON.
pub fn from_sse(body: &[u8]) -> Result<Vec<u8>, Incomplete> {
    let text = String::from_utf8_lossy(body);
    let mut head: Option<Value> = None;
    let mut usage = Value::Null;
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| Incomplete::BadEvent)?;
        if chunk.get("error").is_some() {
            return Err(Incomplete::NotACompletion);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for c in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let choice = choices.entry(index).or_default();
            let delta = c.get("delta").cloned().unwrap_or(Value::Null);
            if let Some(r) = delta.get("role").filter(|r| !r.is_null()) {
                choice.role = Some(r.clone());
            }
            for (field, slot) in [("content", &mut choice.content), ("refusal", &mut choice.refusal)] {
                if let Some(s) = delta.get(field).and_then(Value::as_str) {
                    slot.get_or_insert_with(String::new).push_str(s);
                }
            }
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                merge_tool_call(&mut choice.tool_calls, call);
            }
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                choice.finish_reason = Some(f.clone());
            }
        }
        head.get_or_insert(chunk);
    }
    if !done {
        return Err(Incomplete::NoDone);
    }
    let head = head.ok_or(Incomplete::NotACompletion)?;
    if choices.is_empty() {
        return Err(Incomplete::NotACompletion);
    }
    let mut out_choices = Vec::new();
    for (index, c) in choices {
        let finish = c.finish_reason.ok_or(Incomplete::Unfinished)?;
        let mut message = Map::new();
        message.insert("role".into(), c.role.unwrap_or_else(|| json!("assistant")));
        message.insert("content".into(), c.content.map_or(Value::Null, Value::String));
        message.insert("refusal".into(), c.refusal.map_or(Value::Null, Value::String));
        if !c.tool_calls.is_empty() {
            let calls = c.tool_calls.into_values().map(|mut call| { call.remove("index"); Value::Object(call) }).collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        out_choices.push(json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish}));
    }
    let mut completion = json!({
        "id": head.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": head.get("created").cloned().unwrap_or(Value::Null),
        "model": head.get("model").cloned().unwrap_or(Value::Null),
        "choices": out_choices,
    });
    if let Some(obj) = completion.as_object_mut() {
        if !usage.is_null() {
            obj.insert("usage".into(), usage);
        }
        if let Some(fp) = head.get("system_fingerprint").filter(|f| !f.is_null()) {
            obj.insert("system_fingerprint".into(), fp.clone());
        }
    }
    Ok(completion.to_string().into_bytes())
}

/// Tool calls stream as fragments keyed by `index`: the first has id/type/name, later ones
/// append to `function.arguments`.
fn merge_tool_call(calls: &mut BTreeMap<u64, Map<String, Value>>, delta: &Value) {
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0);
    let call = calls.entry(index).or_default();
    for field in ["id", "type"] {
        if let Some(v) = delta.get(field).filter(|v| !v.is_null()) {
            call.insert(field.into(), v.clone());
        }
    }
    if let Some(f) = delta.get("function") {
        let function = call.entry("function").or_insert_with(|| json!({"name": "", "arguments": ""}));
        for field in ["name", "arguments"] {
            if let (Some(piece), Some(slot)) = (f.get(field).and_then(Value::as_str), function.get_mut(field)) {
                let joined = format!("{}{piece}", slot.as_str().unwrap_or(""));
                *slot = Value::String(joined);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(events: &[&str]) -> Vec<u8> {
        events.iter().map(|e| format!("data: {e}\n\n")).collect::<String>().into_bytes()
    }

    const ROLE: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
    const HELLO: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
    const LO: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#;
    const STOP: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    const USAGE: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;

    #[test]
    fn assembles_a_stream_into_a_completion() {
        let out: Value = serde_json::from_slice(&from_sse(&sse(&[ROLE, HELLO, LO, STOP, USAGE, "[DONE]"])).unwrap()).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["id"], "c1");
        assert_eq!(out["choices"][0]["message"]["content"], "Hello");
        assert_eq!(out["choices"][0]["message"]["role"], "assistant");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(out["usage"]["total_tokens"], 3);
    }

    #[test]
    fn truncated_or_broken_streams_are_refused() {
        assert_eq!(from_sse(&sse(&[ROLE, HELLO, LO, STOP])), Err(Incomplete::NoDone));
        assert_eq!(from_sse(&sse(&[ROLE, HELLO, "[DONE]"])), Err(Incomplete::Unfinished));
        assert_eq!(from_sse(&sse(&[ROLE, "{oops", STOP, "[DONE]"])), Err(Incomplete::BadEvent));
        assert_eq!(from_sse(&sse(&["[DONE]"])), Err(Incomplete::NotACompletion));
        assert_eq!(from_sse(&sse(&[r#"{"error":{"message":"x"}}"#, "[DONE]"])), Err(Incomplete::NotACompletion));
    }

    #[test]
    fn tool_call_fragments_are_joined() {
        let a = r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"ci"}}]}}]}"#;
        let b = r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#;
        let out: Value = serde_json::from_slice(&from_sse(&sse(&[a, b, "[DONE]"])).unwrap()).unwrap();
        let call = &out["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(call.get("index").is_none());
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
