//! The store policy, rule by rule: one row per case, each rule both accepted and refused where
//! that means something, and the cases that probing found cached before the rules existed.

use super::*;

const MAX: usize = 4096;
const JSON: &str = "application/json";
const SSE: &str = "text/event-stream; charset=utf-8";

fn policy() -> StorePolicy {
    StorePolicy::new(&StoreConfig::default(), MAX)
}

/// A `chat.completion` with one choice per `(content, finish_reason)`; `"null"` for no reason.
fn completion(choices: &[(&str, &str)]) -> String {
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, (content, finish))| {
            let finish = if *finish == "null" { Value::Null } else { Value::from(*finish) };
            serde_json::json!({"index": i, "message": {"role": "assistant", "content": content}, "logprobs": null, "finish_reason": finish})
        })
        .collect();
    serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m", "choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).to_string()
}

fn answer(content: &str) -> String {
    completion(&[(content, "stop")])
}

/// An SSE body of `data:` events.
fn stream(events: &[&str]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

fn chunk(delta: &str, finish: &str) -> String {
    let finish = if finish == "null" { "null".to_string() } else { format!("\"{finish}\"") };
    format!(r#"{{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#)
}

/// A complete stream saying `text`, finished with `finish`.
fn streamed(text: &str, finish: &str) -> String {
    let content = chunk(&serde_json::json!({"role": "assistant", "content": text}).to_string(), "null");
    stream(&[&content, &chunk("{}", finish), "[DONE]"])
}

struct Row {
    case: &'static str,
    status: u32,
    content_type: &'static str,
    cache_control: &'static str,
    body: String,
    /// `None`: stored; else the refusal's label.
    refused: Option<&'static str>,
}

fn ok(case: &'static str, content_type: &'static str, body: String) -> Row {
    Row { case, status: 200, content_type, cache_control: "", body, refused: None }
}

fn no(case: &'static str, content_type: &'static str, body: String, label: &'static str) -> Row {
    Row { case, status: 200, content_type, cache_control: "", body, refused: Some(label) }
}

fn with_status(status: u32, refused: Option<&'static str>) -> Row {
    Row { case: "status", status, content_type: JSON, cache_control: "", body: answer("4"), refused }
}

fn with_cache_control(cache_control: &'static str, refused: Option<&'static str>) -> Row {
    Row { case: "cache-control", status: 200, content_type: SSE, cache_control, body: streamed("4", "stop"), refused }
}

fn rows() -> Vec<Row> {
    let tool_call = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
    let function_call = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}},"finish_reason":"function_call"}]}"#;
    let filler = MAX - answer("").len();
    vec![
        // 1. Exactly 200.
        with_status(200, None),
        with_status(201, Some("status")),
        with_status(203, Some("status")),
        with_status(204, Some("status")),
        with_status(206, Some("status")),
        with_status(0, Some("status")),
        // 2. Cache-Control.
        with_cache_control("", None),
        with_cache_control("no-cache", None),
        with_cache_control("public, max-age=60", None),
        with_cache_control("no-store", Some("no_store")),
        with_cache_control("max-age=0, NO-STORE", Some("no_store")),
        with_cache_control("private", Some("no_store")),
        with_cache_control("Private, max-age=60", Some("no_store")),
        with_cache_control("private=\"set-cookie\"", Some("no_store")),
        with_cache_control("no-cache, no-store, must-revalidate", Some("no_store")),
        // 3. Size.
        ok("at max_store_bytes", JSON, answer(&"x".repeat(filler))),
        no("over max_store_bytes", JSON, answer(&"x".repeat(filler + 1)), "too_large"),
        // 4. Content type, and the body is what it says.
        ok("json", "application/json; charset=utf-8", answer("4")),
        ok("json in capitals", "Application/JSON", answer("4")),
        ok("sse", "text/event-stream", streamed("4", "stop")),
        no("no content type", "", answer("4"), "content_type"),
        no("text/plain", "text/plain", answer("4"), "content_type"),
        no("html", "text/html; charset=utf-8", answer("4"), "content_type"),
        no("json said to be a stream", SSE, answer("4"), "content_type"),
        no("a stream said to be json", JSON, streamed("4", "stop"), "content_type"),
        no("a stream said to be json, event first", JSON, format!("event: message\n{}", streamed("4", "stop")), "content_type"),
        // 5. No error, in any form.
        ok("text that mentions an error", JSON, answer("An error: a mistake. {\"error\": 1} is JSON.")),
        ok("a stream that mentions an error", SSE, streamed("event: error is an SSE line", "stop")),
        no("an error body with 200", JSON, r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#.into(), "upstream_error"),
        no("a completion with an error member", JSON, answer("4").replacen('{', r#"{"error":null,"#, 1), "upstream_error"),
        no("vLLM's error object", JSON, r#"{"object":"error","message":"The model is overloaded","type":"ServiceUnavailableError","code":503}"#.into(), "upstream_error"),
        no("an error event with an error key", SSE, stream(&[&chunk(r#"{"role":"assistant","content":"Hel"}"#, "null"), r#"{"error":{"message":"upstream died"}}"#, &chunk("{}", "stop"), "[DONE]"]), "upstream_error"),
        no("event: error without an error key (probe)", SSE, format!("event: error\ndata: {{\"message\":\"overloaded\"}}\n\n{}", streamed("Hi", "stop")), "upstream_error"),
        no("event: error without data", SSE, format!("{}event: error\n\n", streamed("Hi", "stop")), "upstream_error"),
        no("object: error, then a finish and [DONE] (probe)", SSE, stream(&[&chunk(r#"{"role":"assistant","content":"Hel"}"#, "null"), r#"{"object":"error","message":"overloaded","code":503}"#, &chunk("{}", "stop"), "[DONE]"]), "upstream_error"),
        no("type: error", SSE, format!("{}{}", stream(&[r#"{"type":"error","message":"overloaded"}"#]), streamed("Hi", "stop")), "upstream_error"),
        // 6. A complete chat.completion.
        no("no choices", JSON, r#"{"object":"chat.completion","choices":[]}"#.into(), "not_a_completion"),
        no("another object", JSON, answer("4").replace("\"chat.completion\"", "\"text_completion\""), "not_a_completion"),
        no("a choice without a message", JSON, r#"{"object":"chat.completion","choices":[{"index":0,"finish_reason":"stop"}]}"#.into(), "not_a_completion"),
        no("not an object", JSON, "[1, 2]".into(), "not_a_completion"),
        no("cut json", JSON, answer("4")[..40].into(), "not_a_completion"),
        no("a stream of nothing", SSE, stream(&["[DONE]"]), "not_a_completion"),
        no("an event that is not json", SSE, stream(&[&chunk(r#"{"content":"4"}"#, "null"), "{oops", &chunk("{}", "stop"), "[DONE]"]), "bad_event"),
        no("a stream without [DONE]", SSE, stream(&[&chunk(r#"{"content":"4"}"#, "null"), &chunk("{}", "stop")]), "truncated_stream"),
        // 7. Finished, for an allowed reason.
        ok("tool_calls", JSON, tool_call.into()),
        ok("function_call", JSON, function_call.into()),
        no("no finish reason", JSON, completion(&[("4", "null")]), "unfinished"),
        no("a stream without a finish", SSE, stream(&[&chunk(r#"{"content":"4"}"#, "null"), "[DONE]"]), "unfinished"),
        no("length (probe)", JSON, completion(&[("The first ten primes are 2, 3, 5", "length")]), "finish_length"),
        no("length, streamed", SSE, streamed("The first ten primes are 2, 3, 5", "length"), "finish_length"),
        no("content_filter (probe)", JSON, completion(&[("", "content_filter")]), "finish_content_filter"),
        no("another server's reason", JSON, completion(&[("4", "eos_token")]), "finish_other"),
        no("a reason that is not a string", JSON, answer("4").replace("\"stop\"", "5"), "finish_other"),
        no("one choice of two cut", JSON, completion(&[("4", "stop"), ("Four, bec", "length")]), "finish_length"),
        // 8. Not an overload notice (is_overload_notice has its own table).
        ok("an answer about overload", JSON, answer("The server is overloaded when requests arrive faster than it serves them; add replicas.")),
        no("overloaded with 200 (probe)", JSON, answer("The server is overloaded. Please try again later."), "overloaded"),
        no("overloaded, streamed", SSE, streamed("Rate limit exceeded", "stop"), "overloaded"),
        no("one choice of two overloaded", JSON, completion(&[("4", "stop"), ("Service Unavailable", "stop")]), "overloaded"),
    ]
}

#[test]
fn only_a_complete_successful_answer_is_stored() {
    let policy = policy();
    for row in rows() {
        let got = policy.check(Answer { status: row.status, content_type: row.content_type, cache_control: row.cache_control, body: row.body.as_bytes() });
        let what = format!("{} (status {}, {:?}, cache-control {:?})", row.case, row.status, row.content_type, row.cache_control);
        match (row.refused, got) {
            (None, Ok(_)) => {}
            (Some(label), Err(e)) => assert_eq!(e.label(), label, "{what}: {e}"),
            (want, got) => panic!("{what}: wanted {want:?}, got {:?}", got.map(|_| "stored").map_err(|e| e.label())),
        }
    }
}

#[test]
fn the_allowed_finish_reasons_are_the_configuration_s() {
    let policy = StorePolicy::new(&StoreConfig { allow_finish_reasons: vec!["stop".into(), "length".into(), "eos_token".into()] }, MAX);
    let check = |body: String| policy.check(Answer { status: 200, content_type: JSON, cache_control: "", body: body.as_bytes() }).map_err(|e| e.label());
    assert!(check(completion(&[("2, 3, 5", "length")])).is_ok(), "length, when allowed");
    assert!(check(completion(&[("4", "eos_token")])).is_ok());
    assert_eq!(check(completion(&[("", "content_filter")])), Err("finish_content_filter"));
    let tool_call = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"content":null},"finish_reason":"tool_calls"}]}"#;
    assert_eq!(check(tool_call.into()), Err("finish_other"), "not in this list");
}

#[test]
fn json_is_stored_as_sent_and_a_stream_as_the_completion_it_assembles_into() {
    let json = answer("4");
    let stored = policy().check(Answer { status: 200, content_type: JSON, cache_control: "", body: json.as_bytes() }).unwrap();
    assert_eq!(stored, json.as_bytes());
    let sse = streamed("Hello", "stop");
    let stored: Value = serde_json::from_slice(&policy().check(Answer { status: 200, content_type: SSE, cache_control: "no-cache", body: sse.as_bytes() }).unwrap()).unwrap();
    assert_eq!((stored["object"].as_str(), stored["choices"][0]["message"]["content"].as_str()), (Some("chat.completion"), Some("Hello")));
}

#[test]
fn overload_notices_are_whole_short_texts_only() {
    for notice in [
        "The server is overloaded",
        "The server is overloaded. Please try again later.",
        "The server is currently overloaded, please try again later",
        "That model is currently overloaded with other requests.",
        "Rate limit exceeded",
        "rate_limit_exceeded",
        "429 Too Many Requests",
        "You have exceeded your rate limit. Please retry your request in a few seconds.",
        "Service Unavailable",
        "503 Service Temporarily Unavailable",
        "Sorry, the service is temporarily unavailable. Try again later!",
        "Error: server overloaded",
        "  \"Please try again later.\"  ",
        "**Service unavailable**\nPlease try again.",
    ] {
        assert!(is_overload_notice(notice), "{notice:?} is a notice");
    }
    for answer in [
        "",
        "4",
        "The server is overloaded when requests arrive faster than it can serve them.",
        "A 503 means Service Unavailable: the server cannot handle the request right now.",
        "If you see 'rate limit exceeded', wait a minute and try again later.",
        "Rate limits protect an API. When the rate limit is exceeded, the server answers 429.",
        "Try again later. Meanwhile, here is the summary you asked for: the treaty was signed in 1648.",
        "Overloaded",
        "Rate limit",
        "The service is unavailable on weekends",
        "Service Unavailable is the reason phrase of HTTP status 503.",
        "Please try again later.".repeat(12).as_str(),
    ] {
        assert!(!is_overload_notice(answer), "{answer:?} is an answer");
    }
}

#[test]
fn every_refusal_has_one_bounded_label_and_is_documented() {
    let readme = include_str!("../../../../README.md");
    let mut seen = std::collections::HashSet::new();
    for label in NotCacheable::LABELS {
        assert!(seen.insert(label), "{label} twice");
        assert!(readme.contains(&format!("`{label}`")), "README.md does not document the store result {label}");
    }
    let mut given: Vec<&str> = rows().iter().filter_map(|r| r.refused).collect();
    given.sort_unstable();
    given.dedup();
    let mut all = NotCacheable::LABELS.to_vec();
    all.sort_unstable();
    assert_eq!(given, all, "the table refuses by every rule, and by no other");
    for e in [NotCacheable::Status(203), NotCacheable::FinishReason("whatever".into()), Incomplete::NoDone.into()] {
        assert!(NotCacheable::LABELS.contains(&e.label()), "{e}");
    }
}

#[test]
fn summaries_read_the_model_and_usage() {
    let c = br#"{"object":"chat.completion","model":"m-1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
    assert_eq!(summary(c), Summary { model: Some("m-1".into()), input_tokens: Some(12), output_tokens: Some(5) });
    assert_eq!(summary(br#"{"object":"chat.completion","choices":[]}"#), Summary::default());
    assert_eq!(summary(b"not json"), Summary::default());
}
