//! OpenAI wire formats the filter writes itself: error bodies and SSE replays of cached answers.

use serde_json::{Value, json};

/// `{"error": {...}}` as OpenAI-compatible servers return it.
pub fn error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Vec<u8> {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    body.to_string().into_bytes()
}

/// Replays a stored `chat.completion` as the SSE stream an upstream would have sent:
/// a role chunk, a content chunk, a finish chunk per choice, optionally a usage chunk,
/// then `data: [DONE]`. Returns `None` when the stored body is not a completion object.
pub fn completion_to_sse(completion: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let c: Value = serde_json::from_slice(completion).ok()?;
    let choices = c.get("choices")?.as_array()?;
    let base = |choices: Value| {
        let mut chunk = json!({
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": c.get("created").cloned().unwrap_or(Value::Null),
            "model": c.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        });
        if let (Some(fp), Some(obj)) = (c.get("system_fingerprint"), chunk.as_object_mut()) {
            obj.insert("system_fingerprint".into(), fp.clone());
        }
        chunk
    };
    let mut out = Vec::new();
    let mut event = |v: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let role = message.get("role").cloned().unwrap_or(json!("assistant"));
        event(base(json!([{"index": index, "delta": {"role": role, "content": ""}, "logprobs": null, "finish_reason": null}])));
        let mut delta = serde_json::Map::new();
        for field in ["content", "refusal", "tool_calls"] {
            if let Some(v) = message.get(field).filter(|v| !v.is_null()) {
                delta.insert(field.into(), with_tool_call_indexes(field, v));
            }
        }
        if !delta.is_empty() {
            event(base(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}])));
        }
        let finish = choice.get("finish_reason").cloned().unwrap_or(json!("stop"));
        event(base(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}])));
    }
    if let Some(usage) = c.get("usage").filter(|_| include_usage) {
        let mut chunk = base(json!([]));
        if let Some(obj) = chunk.as_object_mut() {
            obj.insert("usage".into(), usage.clone());
        }
        event(chunk);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out)
}

/// Streamed tool calls carry an `index` per call, which a completion's message does not.
fn with_tool_call_indexes(field: &str, v: &Value) -> Value {
    match (field, v) {
        ("tool_calls", Value::Array(calls)) => Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    if let Some(obj) = call.as_object_mut() {
                        obj.entry("index").or_insert(json!(i));
                    }
                    call
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":7,"model":"math-model",
        "choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

    fn events(sse: &[u8]) -> Vec<String> {
        let text = String::from_utf8(sse.to_vec()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap().to_string()).collect()
    }

    #[test]
    fn replays_a_completion_as_chunks_then_done() {
        let ev = events(&completion_to_sse(COMPLETION.as_bytes(), false).unwrap());
        assert_eq!(ev.len(), 4);
        let chunks: Vec<Value> = ev[..3].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], "chatcmpl-1");
            assert_eq!(c["model"], "math-model");
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "4");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[3], "[DONE]");
    }

    #[test]
    fn usage_chunk_only_when_asked() {
        let ev = events(&completion_to_sse(COMPLETION.as_bytes(), true).unwrap());
        let usage: Value = serde_json::from_str(&ev[3]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 4);
    }

    #[test]
    fn tool_calls_get_stream_indexes() {
        let c = r#"{"id":"x","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
        let ev = events(&completion_to_sse(c.as_bytes(), false).unwrap());
        let delta: Value = serde_json::from_str(&ev[1]).unwrap();
        assert_eq!(delta["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert!(delta["choices"][0]["delta"].get("content").is_none());
    }

    #[test]
    fn not_a_completion_gives_none() {
        assert!(completion_to_sse(b"garbage", false).is_none());
        assert!(completion_to_sse(b"{\"error\":{}}", false).is_none());
    }

    #[test]
    fn error_body_is_openai_shaped() {
        let v: Value = serde_json::from_slice(&error_body("bad", "invalid_request_error", "invalid_json", Some("messages"))).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_json");
        assert_eq!(v["error"]["param"], "messages");
    }
}
