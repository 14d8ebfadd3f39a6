//! Fuzzing the SSE replay (the filter answering a streaming request from the cache) and the
//! SSE assembly (the sidecar turning a streamed answer into the completion it caches): one
//! target (a `proptest!` block) of `VANE_FUZZ_CASES` inputs, split between its properties (see
//! `vane-fuzz`). Found cases are kept at the end as named tests, and proptest replays the seeds
//! in `proptest-regressions/fuzz.txt` first.

use proptest::prelude::*;
use serde_json::Value;
use vane_fuzz::openai::{completion, stream};
use vane_fuzz::{config, json, mutate, peak_bytes, soup};
use vane_proto::wire::sse::{MAX_REPLAY_GROWTH, REPLAY_SLACK, assemble, events, replay};

const SSE_TOKENS: &[&str] = &["data:", "data: ", "event:", "event: error", ": c", "id: 1", "\n", "\r\n", "\r", "\n\n", "[DONE]", "{", "}", "\"", "choices"];
const COMPLETION_KEYS: &[&str] =
    &["id", "object", "created", "model", "choices", "index", "message", "delta", "role", "content", "refusal", "tool_calls", "function", "name", "arguments", "finish_reason", "usage", "system_fingerprint"];

/// The bound replay keeps to, checked here with a small constant so that small inputs show
/// any growth beyond it.
const REPLAY_GROWTH: usize = MAX_REPLAY_GROWTH;

/// Heap per input byte for assembling or reading events: linear, whatever the input.
const BYTES_PER_BYTE: usize = 200;
const SLACK: usize = 64 << 10;

/// Stream bodies: valid streams broken by a few edits, event soup, arbitrary bytes, and events
/// of arbitrary JSON chunks.
fn any_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => mutate(stream().prop_map(|s| s.body)),
        2 => soup(SSE_TOKENS.to_vec(), 24).prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..128),
        2 => proptest::collection::vec(json(COMPLETION_KEYS.to_vec()), 0..5).prop_map(|events| {
            let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            body.push_str("data: [DONE]\n\n");
            body.into_bytes()
        }),
    ]
}

/// Stored completions: valid ones, arbitrary JSON, broken ones, arbitrary bytes.
fn any_completion() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => completion().prop_map(|c| c.to_string().into_bytes()),
        2 => json(COMPLETION_KEYS.to_vec()).prop_map(|v| v.to_string().into_bytes()),
        2 => proptest::collection::vec(json(COMPLETION_KEYS.to_vec()), 0..8).prop_map(|choices| serde_json::json!({"id": "x", "choices": choices}).to_string().into_bytes()),
        2 => mutate(completion().prop_map(|c| c.to_string().into_bytes())),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        // What makes a replay grow: a long id, model or fingerprint repeated over many choices.
        2 => ("[a-z]{0,400}", 0..200usize, any::<bool>()).prop_map(|(id, n, with_message)| {
            let choice = if with_message { serde_json::json!({"message": {}, "finish_reason": "stop"}) } else { serde_json::json!({}) };
            serde_json::json!({"id": id, "model": id, "system_fingerprint": id, "choices": vec![choice; n]}).to_string().into_bytes()
        }),
    ]
}

/// What must hold of anything `assemble` accepts.
fn check_completion(bytes: &[u8]) -> Result<Value, TestCaseError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
    prop_assert_eq!(&v["object"], "chat.completion");
    let choices = v["choices"].as_array().ok_or_else(|| TestCaseError::fail("no choices"))?;
    prop_assert!(!choices.is_empty());
    for c in choices {
        prop_assert!(!c["finish_reason"].is_null());
        prop_assert!(c["message"].is_object());
    }
    Ok(v)
}

/// The SSE chunks of a replay, checked: every event a `chat.completion.chunk` but the last,
/// which is `[DONE]`.
fn check_replay(sse: &[u8]) -> Result<(), TestCaseError> {
    let text = std::str::from_utf8(sse).map_err(|e| TestCaseError::fail(format!("not UTF-8: {e}")))?;
    prop_assert!(text.ends_with("data: [DONE]\n\n"));
    let ev = events(text);
    let (done, chunks) = ev.split_last().ok_or_else(|| TestCaseError::fail("no events"))?;
    prop_assert_eq!(done.data.as_str(), "[DONE]");
    for e in chunks {
        let v: Value = serde_json::from_str(&e.data).map_err(|err| TestCaseError::fail(format!("chunk not JSON: {err}")))?;
        prop_assert_eq!(&v["object"], "chat.completion.chunk");
    }
    Ok(())
}

/// `content: null` comes back `""` from a replay (its role chunk carries `"content": ""`, as
/// OpenAI's does): the one difference a round trip may make.
fn null_content_as_empty(mut v: Value) -> Value {
    for c in v["choices"].as_array_mut().into_iter().flatten() {
        if c["message"]["content"].is_null() {
            c["message"]["content"] = "".into();
        }
    }
    v
}

proptest! {
    #![proptest_config(config(5))]

    /// SSE events, any text: never a panic, no more data than text, heap linear in the text.
    #[test]
    fn fuzz_sse_events(text in soup(SSE_TOKENS.to_vec(), 48)) {
        let (ev, peak) = peak_bytes(|| events(&text));
        prop_assert!(peak <= BYTES_PER_BYTE * text.len() + SLACK, "{peak} bytes for {}", text.len());
        let lines = text.split(['\n', '\r']).count();
        prop_assert!(ev.len() <= lines);
        prop_assert!(ev.iter().map(|e| e.data.len()).sum::<usize>() <= text.len());
    }

    /// SSE assembly, any body: a completion or a reason, never a panic; heap linear in the
    /// body; what is accepted is a `chat.completion` whose every choice has a finish reason.
    #[test]
    fn fuzz_sse_assemble_any_stream(body in any_stream()) {
        let (out, peak) = peak_bytes(|| assemble(&body));
        prop_assert!(peak <= BYTES_PER_BYTE * body.len() + SLACK, "{peak} bytes for {}", body.len());
        if let Ok(c) = out {
            check_completion(&c)?;
        }
    }

    /// SSE assembly, valid streams (choices interleaved, content, refusals and tool calls in
    /// fragments, CRLF or CR line ends, comments): exactly the completion streamed; replayed
    /// and assembled again, the same bytes.
    #[test]
    fn fuzz_sse_assemble_valid_streams(s in stream(), usage in any::<bool>()) {
        let assembled = assemble(&s.body).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let got: Value = serde_json::from_slice(&assembled).unwrap();
        prop_assert_eq!(&got, &s.completion);
        let replayed = replay(&assembled, usage).ok_or_else(|| TestCaseError::fail("not replayed"))?;
        check_replay(&replayed)?;
        let back = assemble(&replayed).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        if usage {
            let want = null_content_as_empty_bytes(&assembled);
            prop_assert_eq!(String::from_utf8_lossy(&back), String::from_utf8_lossy(&want));
        } else {
            let mut want = null_content_as_empty(got);
            want.as_object_mut().unwrap().remove("usage");
            prop_assert_eq!(serde_json::from_slice::<Value>(&back).unwrap(), want);
        }
    }

    /// SSE replay, valid completions: a stream of chunks ending in `[DONE]` that assembles
    /// into the completion's text, refusals, tool calls and finish reasons.
    #[test]
    fn fuzz_sse_replay_valid_completions(c in completion(), usage in any::<bool>()) {
        let bytes = c.to_string().into_bytes();
        let sse = replay(&bytes, usage).ok_or_else(|| TestCaseError::fail("not replayed"))?;
        check_replay(&sse)?;
        prop_assert!(sse.len() <= REPLAY_GROWTH * bytes.len() + REPLAY_SLACK);
        let back = check_completion(&assemble(&sse).map_err(|e| TestCaseError::fail(format!("{e:?}")))?)?;
        let want = null_content_as_empty(c.clone());
        for (b, w) in back["choices"].as_array().unwrap().iter().zip(want["choices"].as_array().unwrap()) {
            prop_assert_eq!(&b["message"]["content"], &w["message"]["content"]);
            prop_assert_eq!(&b["message"]["refusal"], w["message"].get("refusal").unwrap_or(&Value::Null));
            prop_assert_eq!(b["message"].get("tool_calls"), w["message"].get("tool_calls"));
            prop_assert_eq!(&b["finish_reason"], &w["finish_reason"]);
        }
        prop_assert_eq!(back["choices"].as_array().map(Vec::len), c["choices"].as_array().map(Vec::len));
        prop_assert_eq!(back.get("usage").filter(|_| usage), c.get("usage").filter(|_| usage));
    }

    /// SSE replay, any stored bytes: a stream or `None`, never a panic, and never more than
    /// `REPLAY_GROWTH` times the completion (plus a constant), in what it gives or holds.
    #[test]
    fn fuzz_sse_replay_any_completion(bytes in any_completion(), usage in any::<bool>()) {
        let (sse, peak) = peak_bytes(|| replay(&bytes, usage));
        // The stream buffer may double past the bound before the check refuses it.
        let most = 2 * (REPLAY_GROWTH * bytes.len() + REPLAY_SLACK) + BYTES_PER_BYTE * bytes.len() + SLACK;
        prop_assert!(peak <= most, "{peak} bytes held for {}", bytes.len());
        if let Some(sse) = sse {
            prop_assert!(sse.len() <= REPLAY_GROWTH * bytes.len() + REPLAY_SLACK, "{} bytes of SSE for {}", sse.len(), bytes.len());
            check_replay(&sse)?;
        }
    }
}

fn null_content_as_empty_bytes(completion: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(completion).unwrap();
    null_content_as_empty(v).to_string().into_bytes()
}

// --- cases found by fuzzing, kept as regressions ---

/// A 13 KB completion of one long id over 1000 empty choices replayed to ~20 MB before replay
/// was bounded; now it is refused (the filter forwards the request: `bad_cache_entry`).
#[test]
fn regression_replay_of_a_long_id_over_many_choices_is_refused() {
    let id = "x".repeat(10_000);
    let c = serde_json::json!({"id": id, "choices": vec![serde_json::json!({}); 1000]}).to_string();
    let (sse, peak) = peak_bytes(|| replay(c.as_bytes(), false));
    assert!(sse.is_none());
    assert!(peak <= MAX_REPLAY_GROWTH * c.len() + REPLAY_SLACK + (1 << 20), "{peak}");
    // Real completions, with many short choices, are well within the bound.
    let choice = serde_json::json!({"index": 0, "message": {"role": "assistant", "content": "ok"}, "logprobs": null, "finish_reason": "stop"});
    let many = serde_json::json!({"id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012", "object": "chat.completion", "created": 1_700_000_000, "model": "meta-llama/Llama-3.1-8B-Instruct", "system_fingerprint": "fp_0123456789", "choices": vec![choice; 128]}).to_string();
    let sse = replay(many.as_bytes(), false).unwrap();
    assert!(sse.len() < 12 * many.len(), "{} for {}", sse.len(), many.len());
}
