//! A chat completion as an SSE stream and back. The filter [`replay`]s a cached completion to
//! a client that asked for `"stream": true`; the sidecar [`assemble`]s a streamed upstream answer
//! into the one completion it caches. Kept together so `assemble(replay(x)) == x` is tested.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Why a streamed answer is not a cacheable completion.
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
    /// The metric label for this reason.
    pub fn label(&self) -> &'static str {
        match self {
            Incomplete::NotACompletion => "not_a_completion",
            Incomplete::Unfinished => "unfinished",
            Incomplete::NoDone => "truncated_stream",
            Incomplete::BadEvent => "bad_event",
        }
    }
}

/// How many bytes of stream a replay may give per byte of completion; real completions need
/// under 12 (many short choices), see [`replay`].
pub const MAX_REPLAY_GROWTH: usize = 16;
/// Bytes of stream any completion may replay to, whatever its size.
pub const REPLAY_SLACK: usize = 64 << 10;

/// Replays a stored `chat.completion` as the SSE stream an upstream would have sent:
/// a role chunk, a content chunk, a finish chunk per choice, optionally a usage chunk,
/// then `data: [DONE]`. Returns `None` when the stored body is not a completion object, or
/// when the stream would be more than [`MAX_REPLAY_GROWTH`] times its size (plus
/// [`REPLAY_SLACK`]): every chunk repeats the completion's `id`, `model` and fingerprint, so a
/// long `id` over many (empty) choices would otherwise grow quadratically (a fuzz property in
/// `tests/fuzz.rs` holds replay to this bound).
///
/// ```
/// let c = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}]}"#;
/// let sse = vane_proto::wire::sse::replay(c, false).unwrap();
/// assert!(sse.ends_with(b"data: [DONE]\n\n"));
/// ```
pub fn replay(completion: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let limit = completion.len().saturating_mul(MAX_REPLAY_GROWTH).saturating_add(REPLAY_SLACK);
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
        out.len() <= limit
    };
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let role = message.get("role").cloned().unwrap_or(json!("assistant"));
        if !event(base(json!([{"index": index, "delta": {"role": role, "content": ""}, "logprobs": null, "finish_reason": null}]))) {
            return None;
        }
        let mut delta = Map::new();
        for field in ["content", "refusal", "tool_calls"] {
            if let Some(v) = message.get(field).filter(|v| !v.is_null()) {
                delta.insert(field.into(), with_tool_call_indexes(field, v));
            }
        }
        if !delta.is_empty() && !event(base(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]))) {
            return None;
        }
        let finish = choice.get("finish_reason").cloned().unwrap_or(json!("stop"));
        if !event(base(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}]))) {
            return None;
        }
    }
    if let Some(usage) = c.get("usage").filter(|_| include_usage) {
        let mut chunk = base(json!([]));
        if let Some(obj) = chunk.as_object_mut() {
            obj.insert("usage".into(), usage.clone());
        }
        if !event(chunk) {
            return None;
        }
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

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Option<Value>,
}

/// One server-sent event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: Option<&'a str>,
    pub data: String,
}

/// The events of an SSE body as a client reads them (the WHATWG rules): lines end with LF, CRLF
/// or CR; a blank line ends an event; `field: value` drops one space after the colon; lines
/// starting with `:` are comments; `data:` lines of one event are joined by `\n`; an event with
/// neither name nor data is no event. Unlike a browser, an event the body ends without a blank
/// line after is still given (a stream cut there is caught by the missing `[DONE]`).
///
/// ```
/// use vane_proto::wire::sse::events;
/// let ev = events("event: error\r\ndata: {\"a\":\n: note\ndata: 1}\n\ndata: [DONE]\n\n");
/// assert_eq!((ev[0].name, ev[0].data.as_str()), (Some("error"), "{\"a\":\n1}"));
/// assert_eq!((ev[1].name, ev[1].data.as_str()), (None, "[DONE]"));
/// ```
pub fn events(text: &str) -> Vec<Event<'_>> {
    let mut out = Vec::new();
    let (mut name, mut data): (Option<&str>, Option<String>) = (None, None);
    // `lines()` splits on LF and CRLF; a lone CR ends a line too.
    for line in text.lines().flat_map(|l| l.split('\r')) {
        if line.is_empty() {
            if name.is_some() || data.is_some() {
                out.push(Event { name: name.take(), data: data.take().unwrap_or_default() });
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    if name.is_some() || data.is_some() {
        out.push(Event { name, data: data.unwrap_or_default() });
    }
    out
}

/// Assembles an SSE body of `chat.completion.chunk` events (content, refusal and tool-call
/// deltas, usage) into one `chat.completion` JSON. The stream must end with `data: [DONE]` and
/// give every choice a finish reason: a truncated stream is never a completion.
///
/// ```
/// use vane_proto::wire::sse::{Incomplete, assemble};
/// let body = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"4\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
/// let completion: serde_json::Value = serde_json::from_slice(&assemble(body).unwrap()).unwrap();
/// assert_eq!(completion["choices"][0]["message"]["content"], "4");
/// assert_eq!(assemble(b"data: {\"choices\":[]}\n\n"), Err(Incomplete::NoDone));
/// ```
pub fn assemble(body: &[u8]) -> Result<Vec<u8>, Incomplete> {
    let text = String::from_utf8_lossy(body);
    let mut head: Option<Value> = None;
    let mut usage = Value::Null;
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    let mut done = false;
    for event in events(&text) {
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
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
            let calls = c
                .tool_calls
                .into_values()
                .map(|mut call| {
                    call.remove("index");
                    Value::Object(call)
                })
                .collect();
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
            // Appended in place: a call streamed in many fragments is linear, not quadratic.
            if let (Some(piece), Some(Value::String(slot))) = (f.get(field).and_then(Value::as_str), function.get_mut(field)) {
                slot.push_str(piece);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- replay ---

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
        let ev = events(&replay(COMPLETION.as_bytes(), false).unwrap());
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
        let ev = events(&replay(COMPLETION.as_bytes(), true).unwrap());
        let usage: Value = serde_json::from_str(&ev[3]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 4);
    }

    #[test]
    fn tool_calls_get_stream_indexes() {
        let c = r#"{"id":"x","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
        let ev = events(&replay(c.as_bytes(), false).unwrap());
        let delta: Value = serde_json::from_str(&ev[1]).unwrap();
        assert_eq!(delta["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert!(delta["choices"][0]["delta"].get("content").is_none());
    }

    #[test]
    fn not_a_completion_gives_none() {
        assert!(replay(b"garbage", false).is_none());
        assert!(replay(b"{\"error\":{}}", false).is_none());
    }

    // --- assemble (the same cases as the sidecar's completion.rs) ---

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
        let out: Value = serde_json::from_slice(&assemble(&sse(&[ROLE, HELLO, LO, STOP, USAGE, "[DONE]"])).unwrap()).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["id"], "c1");
        assert_eq!(out["choices"][0]["message"]["content"], "Hello");
        assert_eq!(out["choices"][0]["message"]["role"], "assistant");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(out["usage"]["total_tokens"], 3);
    }

    #[test]
    fn truncated_or_broken_streams_are_refused() {
        assert_eq!(assemble(&sse(&[ROLE, HELLO, LO, STOP])), Err(Incomplete::NoDone));
        assert_eq!(assemble(&sse(&[ROLE, HELLO, "[DONE]"])), Err(Incomplete::Unfinished));
        assert_eq!(assemble(&sse(&[ROLE, "{oops", STOP, "[DONE]"])), Err(Incomplete::BadEvent));
        assert_eq!(assemble(&sse(&["[DONE]"])), Err(Incomplete::NotACompletion));
        assert_eq!(assemble(&sse(&[r#"{"error":{"message":"x"}}"#, "[DONE]"])), Err(Incomplete::NotACompletion));
        assert_eq!(assemble(b""), Err(Incomplete::NoDone));
    }

    #[test]
    fn crlf_events_and_data_without_a_space_are_read() {
        let body = format!("data:{ROLE}\r\n\r\n: a comment\r\ndata: {STOP}\r\n\r\ndata: [DONE]\r\n\r\n");
        let out: Value = serde_json::from_slice(&assemble(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(out["choices"][0]["message"]["content"], "");
    }

    #[test]
    fn events_follow_the_sse_rules() {
        let ev = |name: Option<&'static str>, data: &str| Event { name, data: data.into() };
        for (body, want) in [
            ("data: a\n\ndata: b\n\n", vec![ev(None, "a"), ev(None, "b")]),
            ("data:a\rdata:  b\r\r", vec![ev(None, "a\n b")]),
            ("event: error\ndata: {}\n\n", vec![ev(Some("error"), "{}")]),
            ("event:error\n\n", vec![ev(Some("error"), "")]),
            (": comment\nid: 1\nretry: 5\n\n\n", vec![]),
            ("data\n\ndata: [DONE]", vec![ev(None, ""), ev(None, "[DONE]")]),
        ] {
            assert_eq!(super::events(body), want, "{body:?}");
        }
        // Two data lines of one event are one JSON text, as a client reads them.
        let joined = format!("data: {}\ndata: {}\n\ndata: [DONE]\n\n", &STOP[..20], &STOP[20..]);
        let out: Value = serde_json::from_slice(&assemble(joined.as_bytes()).unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn tool_call_fragments_are_joined() {
        let a = r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"ci"}}]}}]}"#;
        let b = r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#;
        let out: Value = serde_json::from_slice(&assemble(&sse(&[a, b, "[DONE]"])).unwrap()).unwrap();
        let call = &out["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(call.get("index").is_none());
    }

    // --- the round trip: what the sidecar caches, replayed by the filter, assembles back ---

    /// Completions in the form `assemble` produces (what the cache holds for a streamed answer).
    fn canonical_completions() -> Vec<Vec<u8>> {
        let two_choices_with_tools = [
            r#"{"id":"c2","created":9,"model":"m","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}},{"index":1,"delta":{"role":"assistant","content":"","refusal":"No."}}]}"#,
            r#"{"id":"c2","created":9,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"x\""}},{"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            r#"{"id":"c2","created":9,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"},{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
            USAGE,
            "[DONE]",
        ];
        vec![assemble(&sse(&[ROLE, HELLO, LO, STOP, USAGE, "[DONE]"])).unwrap(), assemble(&sse(&two_choices_with_tools)).unwrap()]
    }

    #[test]
    fn assemble_of_replay_gives_the_completion_back() {
        for x in canonical_completions() {
            let back = assemble(&replay(&x, true).unwrap()).unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), String::from_utf8(x).unwrap());
        }
    }

    #[test]
    fn a_null_content_comes_back_empty() {
        // Known and kept: the replayed role chunk carries `"content": ""` (as OpenAI's first chunk
        // does), so a message without content (tool calls or a refusal only) comes back with "".
        let x = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"No."},"finish_reason":"stop"}]}"#;
        let back: Value = serde_json::from_slice(&assemble(&replay(x, false).unwrap()).unwrap()).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], "");
        assert_eq!(back["choices"][0]["message"]["refusal"], "No.");
    }

    #[test]
    fn without_usage_the_round_trip_loses_only_usage() {
        for x in canonical_completions() {
            let mut want: Value = serde_json::from_slice(&x).unwrap();
            want.as_object_mut().unwrap().remove("usage");
            let back: Value = serde_json::from_slice(&assemble(&replay(&x, false).unwrap()).unwrap()).unwrap();
            assert_eq!(back, want);
        }
    }
}
