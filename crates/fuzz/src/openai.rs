//! Valid OpenAI chat traffic, each with what a correct reader must make of it: requests
//! ([`chat_request`], and the prompt in them), completions ([`completion`]) and completions
//! streamed as SSE ([`stream`], and the completion they assemble into).

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use crate::{json as any_json, soup};

/// What chat texts are made of, besides arbitrary characters: words, JSON and SSE syntax,
/// line ends, CJK, emoji.
const WORDS: &[&str] = &[
    "What", "is", "2+2", "the", "capital", "of", "France", "not", "how", "do", "I", "你好", "怎么", "秦朝", "😀", "\n", "\r\n", "\"", "\\", "{",
    "}", "data: ", "[DONE]", "\n\n", "event: error", "null",
];

/// Chat text: up to `max` pieces.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    soup(WORDS.to_vec(), max)
}

/// A model name that is valid as a header value (what a client may ask for).
pub fn model_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["auto", "gpt-4o-mini", "math-model", "meta-llama/Llama-3.1-8B-Instruct", "qwen3:32b", "modèle 2"]).prop_map(str::to_owned),
        "[A-Za-z0-9][A-Za-z0-9._:/ -]{0,62}[A-Za-z0-9]",
    ]
}

/// A message's `content`.
#[derive(Debug, Clone)]
pub enum Content {
    Absent,
    Null,
    Text(String),
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    Image(String),
}

#[derive(Debug, Clone)]
pub struct Message {
    pub role: &'static str,
    pub content: Content,
}

/// A valid chat request, as fields.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: Option<bool>,
    pub include_usage: Option<bool>,
    pub user: Option<String>,
    pub messages: Vec<Message>,
    /// Sampling parameters, tools, vendor extensions: anything else at the top level.
    pub extra: Map<String, Value>,
}

/// Top-level fields [`ChatRequest::extra`] never holds (they have fields of their own).
const RESERVED: [&str; 5] = ["model", "messages", "stream", "stream_options", "user"];

impl ChatRequest {
    pub fn to_value(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert("model".into(), self.model.clone().into());
        if let Some(s) = self.stream {
            body.insert("stream".into(), s.into());
        }
        if let Some(u) = self.include_usage {
            body.insert("stream_options".into(), json!({"include_usage": u}));
        }
        if let Some(u) = &self.user {
            body.insert("user".into(), u.clone().into());
        }
        let messages = self
            .messages
            .iter()
            .map(|m| {
                let mut msg = Map::new();
                msg.insert("role".into(), m.role.into());
                match &m.content {
                    Content::Absent => {}
                    Content::Null => {
                        msg.insert("content".into(), Value::Null);
                    }
                    Content::Text(t) => {
                        msg.insert("content".into(), t.clone().into());
                    }
                    Content::Parts(parts) => {
                        let parts = parts
                            .iter()
                            .map(|p| match p {
                                Part::Text(t) => json!({"type": "text", "text": t}),
                                Part::Image(u) => json!({"type": "image_url", "image_url": {"url": u}}),
                            })
                            .collect();
                        msg.insert("content".into(), Value::Array(parts));
                    }
                }
                Value::Object(msg)
            })
            .collect();
        body.insert("messages".into(), Value::Array(messages));
        Value::Object(body)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }

    /// The prompt a reader must find: the text of the last user message, its text parts joined
    /// by newlines; empty without a user message.
    pub fn prompt(&self) -> String {
        let Some(last) = self.messages.iter().rev().find(|m| m.role == "user") else { return String::new() };
        match &last.content {
            Content::Absent | Content::Null => String::new(),
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    Part::Image(_) => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    let part = prop_oneof![3 => text(12).prop_map(Part::Text), 1 => "[a-z:/.]{0,24}".prop_map(Part::Image)];
    prop_oneof![
        1 => Just(Content::Absent),
        1 => Just(Content::Null),
        6 => text(24).prop_map(Content::Text),
        2 => proptest::collection::vec(part, 0..4).prop_map(Content::Parts),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let role = select(vec!["user", "user", "system", "assistant", "tool", "developer"]);
    (role, content()).prop_map(|(role, content)| Message { role, content })
}

/// Extra top-level fields: sampling parameters and the like, with arbitrary values.
fn extra() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        select(vec!["temperature", "top_p", "max_tokens", "seed", "tools", "tool_choice", "response_format", "chat_template_kwargs", "reasoning_effort", "n", "stop"])
            .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    let value = any_json(vec!["type", "function", "name", "enable_thinking", "thinking", "text"]);
    proptest::collection::vec((key, value), 0..4)
        .prop_map(|kv| kv.into_iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())).collect())
}

/// A valid chat request: a valid model name, one to six messages with string roles, content as
/// text, parts, null or absent, and extra fields.
pub fn chat_request() -> impl Strategy<Value = ChatRequest> {
    (
        model_name(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of("[a-z0-9-]{0,12}"),
        proptest::collection::vec(message(), 1..6),
        extra(),
    )
        .prop_map(|(model, stream, include_usage, user, messages, extra)| ChatRequest { model, stream, include_usage, user, messages, extra })
}

const FINISH: [&str; 4] = ["stop", "length", "tool_calls", "content_filter"];

fn tool_call() -> impl Strategy<Value = (String, String, Vec<String>)> {
    ("call_[a-z0-9]{1,8}", "[a-z_]{1,12}", proptest::collection::vec(text(4), 0..4))
}

/// A `chat.completion` as an upstream sends it (or the cache holds it): one to four choices
/// with text, null, refusal or tool-call messages, optional usage and fingerprint.
pub fn completion() -> impl Strategy<Value = Value> {
    let choice = (
        proptest::option::of(text(24)),
        proptest::option::of(text(6)),
        proptest::collection::vec(tool_call(), 0..3),
        select(FINISH.to_vec()),
    );
    (text(4), any::<u32>(), model_name(), proptest::collection::vec(choice, 1..4), any::<bool>(), proptest::option::of("fp_[a-z0-9]{1,8}")).prop_map(
        |(id, created, model, choices, usage, fp)| {
            let choices: Vec<Value> = choices
                .into_iter()
                .enumerate()
                .map(|(i, (content, refusal, calls, finish))| {
                    let mut message = json!({"role": "assistant", "content": content});
                    if let Some(r) = refusal {
                        message["refusal"] = r.into();
                    }
                    if !calls.is_empty() {
                        let calls: Vec<Value> = calls
                            .into_iter()
                            .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.concat()}}))
                            .collect();
                        message["tool_calls"] = calls.into();
                    }
                    json!({"index": i, "message": message, "logprobs": null, "finish_reason": finish})
                })
                .collect();
            let mut c = json!({"id": id, "object": "chat.completion", "created": created, "model": model, "choices": choices});
            if usage {
                c["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8});
            }
            if let Some(fp) = fp {
                c["system_fingerprint"] = fp.into();
            }
            c
        },
    )
}

/// One choice of a [`stream`]: its text, refusal and tool calls in the pieces they stream in.
#[derive(Debug, Clone)]
struct Plan {
    content: Option<Vec<String>>,
    refusal: Option<Vec<String>>,
    calls: Vec<(String, String, Vec<String>)>,
    finish: &'static str,
}

/// A choice's deltas still to send, each with its finish reason (the last one's).
type Deltas = std::collections::VecDeque<(Value, Option<&'static str>)>;

/// A streamed completion: the SSE body, and the `chat.completion` it must assemble into.
#[derive(Debug, Clone)]
pub struct Stream {
    pub body: Vec<u8>,
    pub completion: Value,
}

impl Plan {
    /// The deltas of this choice, in order, the last one with the finish reason.
    fn deltas(&self) -> Vec<(Value, Option<&'static str>)> {
        let mut out = Vec::new();
        let mut role = json!({"role": "assistant"});
        if self.content.is_some() {
            role["content"] = "".into();
        }
        out.push((role, None));
        for piece in self.content.iter().flatten() {
            out.push((json!({"content": piece}), None));
        }
        for piece in self.refusal.iter().flatten() {
            out.push((json!({"refusal": piece}), None));
        }
        if self.refusal.as_ref().is_some_and(Vec::is_empty) {
            out.push((json!({"refusal": ""}), None));
        }
        for (k, (id, name, args)) in self.calls.iter().enumerate() {
            let first = args.first().cloned().unwrap_or_default();
            out.push((json!({"tool_calls": [{"index": k, "id": id, "type": "function", "function": {"name": name, "arguments": first}}]}), None));
            for a in args.iter().skip(1) {
                out.push((json!({"tool_calls": [{"index": k, "function": {"arguments": a}}]}), None));
            }
        }
        out.push((json!({}), Some(self.finish)));
        out
    }

    fn message(&self) -> Value {
        let joined = |p: &Option<Vec<String>>| p.as_ref().map_or(Value::Null, |p| p.concat().into());
        let mut m = json!({"role": "assistant", "content": joined(&self.content), "refusal": joined(&self.refusal)});
        if !self.calls.is_empty() {
            let calls: Vec<Value> =
                self.calls.iter().map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.concat()}})).collect();
            m["tool_calls"] = calls.into();
        }
        m
    }
}

/// A completion streamed the way servers stream one: per choice a role chunk, content,
/// refusal and tool-call fragments and a finish chunk, choices interleaved, an optional usage
/// chunk, then `data: [DONE]`; events end with LF, CRLF or CR pairs, `data:` with or without
/// its space, comments between them.
pub fn stream() -> impl Strategy<Value = Stream> {
    let pieces = || proptest::option::of(proptest::collection::vec(text(6), 0..5));
    let plan = (pieces(), pieces(), proptest::collection::vec(tool_call(), 0..3), select(FINISH.to_vec()))
        .prop_map(|(content, refusal, calls, finish)| Plan { content, refusal, calls, finish });
    (
        text(4),
        any::<u32>(),
        model_name(),
        proptest::option::of("fp_[a-z0-9]{1,8}"),
        proptest::collection::vec(plan, 1..4),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 64),
        proptest::collection::vec(0..8u8, 64),
    )
        .prop_map(|(id, created, model, fp, plans, usage, order, style)| {
            let mut head = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model});
            if let Some(fp) = &fp {
                head["system_fingerprint"] = fp.clone().into();
            }
            let mut queues: Vec<(usize, Deltas)> = plans.iter().enumerate().map(|(i, p)| (i, p.deltas().into())).collect();
            let mut chunks = Vec::new();
            let mut step = 0;
            while !queues.is_empty() {
                let q = usize::from(order[step % order.len()]) % queues.len();
                step += 1;
                let (index, queue) = &mut queues[q];
                if let Some((delta, finish)) = queue.pop_front() {
                    let mut chunk = head.clone();
                    chunk["choices"] = json!([{"index": *index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
                    chunks.push(chunk.to_string());
                }
                if queue.is_empty() {
                    queues.remove(q);
                }
            }
            let usage_value = json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3});
            if usage {
                let mut chunk = head.clone();
                chunk["choices"] = json!([]);
                chunk["usage"] = usage_value.clone();
                chunks.push(chunk.to_string());
            }
            chunks.push("[DONE]".into());
            let mut body = String::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let s = style[i % style.len()];
                if s == 7 {
                    body.push_str(": keep-alive\n");
                }
                body.push_str(if s % 2 == 0 { "data: " } else { "data:" });
                body.push_str(chunk);
                body.push_str(match s % 3 {
                    0 => "\n\n",
                    1 => "\r\n\r\n",
                    _ => "\r\r",
                });
            }
            let choices: Vec<Value> = plans
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"index": i, "message": p.message(), "logprobs": null, "finish_reason": p.finish}))
                .collect();
            let mut completion = json!({"id": head["id"], "object": "chat.completion", "created": created, "model": head["model"], "choices": choices});
            if usage {
                completion["usage"] = usage_value;
            }
            if let Some(fp) = fp {
                completion["system_fingerprint"] = fp.into();
            }
            Stream { body: body.into_bytes(), completion }
        })
}
