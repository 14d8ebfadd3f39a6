//! What may be cached: the one statement of it. Only a complete, successful answer is ever
//! served from the cache, so [`StorePolicy::check`] stores an upstream answer only when all of
//! these hold (each refusal is a [`NotCacheable`], counted as `vane_cache_stores_total{result}`
//! with the label in brackets):
//!
//! 1. The status is exactly 200 (`status`): not 203 (a transformed answer), 206 (a part of
//!    one) or any other 2xx, and not 0 (a filter too old to say).
//! 2. The upstream's `Cache-Control` has neither `no-store` nor `private` (`no_store`).
//!    `no-cache` is allowed: streaming servers send it to keep proxies from buffering.
//! 3. It is at most `server.max_store_bytes` (`too_large`; the entry as a whole is bounded by
//!    `cache.max_entry_bytes` again when it is stored).
//! 4. The content type is `application/json` or `text/event-stream` (parameters aside), and
//!    the body is what it says: a JSON object, or events (`content_type`).
//! 5. Nothing in it is an error (`upstream_error`): no `error` member at the top level of the
//!    JSON or of any event, no `"object": "error"`, and in a stream no `event: error` and no
//!    event of `"type": "error"`.
//! 6. It is a `chat.completion` (a stream: `chat.completion.chunk` events that assemble into
//!    one with [`vane_proto::wire::sse::assemble`], beside the filter's replay so that the two
//!    cannot drift) with at least one choice, each with a `message` (`not_a_completion`); every
//!    event is JSON (`bad_event`), and a stream ends with `data: [DONE]` (`truncated_stream`).
//! 7. Every choice has a finish reason (`unfinished`), one of `cache.store.allow_finish_reasons`
//!    (by default `stop`, `tool_calls`, `function_call`): `length` is a truncated answer
//!    (`finish_length`), `content_filter` a withheld one (`finish_content_filter`), anything
//!    else `finish_other`.
//! 8. No choice's whole text is an overload or rate-limit notice sent with a 200 ("The server
//!    is overloaded. Please try again later.", "Rate limit exceeded", "Service Unavailable")
//!    (`overloaded`). Only a short text made of nothing but such sentences counts: an answer
//!    that explains or quotes them is an answer.
//!
//! The filter sends Store only for a 2xx answer that reached its end within its
//! `max_response_bytes`, and says what status and headers came with it; everything else is
//! decided here.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;
pub use vane_proto::wire::sse::Incomplete;
use vane_proto::wire::sse::{assemble, events};
use vane_proto::v1::StoreRequest;

use vane_cache::config::StoreConfig;

/// Why an answer may not be cached: the Store reply's `reason` and the
/// `vane_cache_stores_total{result}` label (a bounded set: [`NotCacheable::LABELS`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCacheable {
    #[error("status {0} (only 200 is stored)")]
    Status(u32),
    #[error("the upstream said Cache-Control: no-store or private")]
    NoStore,
    #[error("the answer is over server.max_store_bytes")]
    TooLarge,
    #[error("the content type is not application/json or text/event-stream, or not what the body is")]
    ContentType,
    #[error("the answer carries an error")]
    UpstreamError,
    #[error(transparent)]
    Incomplete(#[from] Incomplete),
    #[error("finish_reason {0:?} is not in cache.store.allow_finish_reasons")]
    FinishReason(String),
    #[error("the answer is an overload or rate-limit notice")]
    Overloaded,
}

impl NotCacheable {
    /// Every label [`NotCacheable::label`] gives.
    pub const LABELS: [&'static str; 13] = [
        "status",
        "no_store",
        "too_large",
        "content_type",
        "upstream_error",
        "not_a_completion",
        "unfinished",
        "truncated_stream",
        "bad_event",
        "finish_length",
        "finish_content_filter",
        "finish_other",
        "overloaded",
    ];

    pub fn label(&self) -> &'static str {
        match self {
            NotCacheable::Status(_) => "status",
            NotCacheable::NoStore => "no_store",
            NotCacheable::TooLarge => "too_large",
            NotCacheable::ContentType => "content_type",
            NotCacheable::UpstreamError => "upstream_error",
            NotCacheable::Incomplete(e) => e.label(),
            NotCacheable::FinishReason(r) => match r.as_str() {
                "length" => "finish_length",
                "content_filter" => "finish_content_filter",
                _ => "finish_other",
            },
            NotCacheable::Overloaded => "overloaded",
        }
    }
}

/// An upstream answer as the filter saw it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u32,
    pub content_type: &'a str,
    pub cache_control: &'a str,
    pub body: &'a [u8],
}

impl<'a> From<&'a StoreRequest> for Answer<'a> {
    fn from(r: &'a StoreRequest) -> Answer<'a> {
        Answer { status: r.status, content_type: &r.content_type, cache_control: &r.cache_control, body: &r.response }
    }
}

/// The rules of the module's documentation, with what the configuration sets.
#[derive(Debug, Clone)]
pub struct StorePolicy {
    allow_finish_reasons: Vec<String>,
    max_bytes: usize,
}

impl StorePolicy {
    /// `cache.store`, and `server.max_store_bytes` as `max_bytes`.
    pub fn new(config: &StoreConfig, max_bytes: usize) -> StorePolicy {
        StorePolicy { allow_finish_reasons: config.allow_finish_reasons.clone(), max_bytes }
    }

    /// The `chat.completion` to cache for `answer` (a stream assembled into one), or why there
    /// is none.
    pub fn check(&self, answer: Answer<'_>) -> Result<Vec<u8>, NotCacheable> {
        if answer.status != 200 {
            return Err(NotCacheable::Status(answer.status));
        }
        if forbids_storing(answer.cache_control) {
            return Err(NotCacheable::NoStore);
        }
        if answer.body.len() > self.max_bytes {
            return Err(NotCacheable::TooLarge);
        }
        let first = answer.body.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let (completion, value) = match media_type(answer.content_type).as_str() {
            "application/json" if looks_like_sse(answer.body) => return Err(NotCacheable::ContentType),
            "application/json" => {
                let v: Value = serde_json::from_slice(answer.body).map_err(|_| Incomplete::NotACompletion)?;
                (answer.body.to_vec(), v)
            }
            // A JSON body said to be a stream (a line of SSE never starts with `{` or `[`).
            "text/event-stream" if matches!(first, Some(b'{' | b'[')) => return Err(NotCacheable::ContentType),
            "text/event-stream" => {
                check_events(answer.body)?;
                let completion = assemble(answer.body)?;
                let v = serde_json::from_slice(&completion).map_err(|_| Incomplete::NotACompletion)?;
                (completion, v)
            }
            _ => return Err(NotCacheable::ContentType),
        };
        self.check_completion(&value)?;
        Ok(completion)
    }

    /// Rules 5 to 8 on one `chat.completion`.
    fn check_completion(&self, v: &Value) -> Result<(), NotCacheable> {
        let object = v.as_object().ok_or(Incomplete::NotACompletion)?;
        if is_error(v) {
            return Err(NotCacheable::UpstreamError);
        }
        if object.get("object").and_then(Value::as_str) != Some("chat.completion") {
            return Err(Incomplete::NotACompletion.into());
        }
        let choices = object.get("choices").and_then(Value::as_array).filter(|c| !c.is_empty()).ok_or(Incomplete::NotACompletion)?;
        for choice in choices {
            let message = choice.get("message").filter(|m| m.is_object()).ok_or(Incomplete::NotACompletion)?;
            let reason = match choice.get("finish_reason") {
                None | Some(Value::Null) => return Err(Incomplete::Unfinished.into()),
                Some(Value::String(r)) => r.as_str(),
                Some(other) => return Err(NotCacheable::FinishReason(other.to_string())),
            };
            if !self.allow_finish_reasons.iter().any(|allowed| allowed == reason) {
                return Err(NotCacheable::FinishReason(reason.into()));
            }
            if message.get("content").and_then(Value::as_str).is_some_and(is_overload_notice) {
                return Err(NotCacheable::Overloaded);
            }
        }
        Ok(())
    }
}

/// Rule 5 on a stream: no event is an error, in any of the forms servers send one.
fn check_events(body: &[u8]) -> Result<(), NotCacheable> {
    let text = String::from_utf8_lossy(body);
    for event in events(&text) {
        if event.name.is_some_and(|n| n.trim().eq_ignore_ascii_case("error")) {
            return Err(NotCacheable::UpstreamError);
        }
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).map_err(|_| Incomplete::BadEvent)?;
        if is_error(&v) || v.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("error")) {
            return Err(NotCacheable::UpstreamError);
        }
    }
    Ok(())
}

/// An `error` member at the top level (whatever its value), or `"object": "error"` (vLLM's
/// and other OpenAI-compatible servers' error body).
fn is_error(v: &Value) -> bool {
    v.get("error").is_some() || v.get("object").and_then(Value::as_str).is_some_and(|o| o.eq_ignore_ascii_case("error"))
}

/// A body whose first line is an SSE field (`data:`, `event:`, `id:`, `retry:`) or comment.
fn looks_like_sse(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body.get(..body.len().min(16)).unwrap_or(body));
    let text = text.trim_start();
    text.starts_with(':') || ["data:", "event:", "id:", "retry:"].iter().any(|f| text.starts_with(f))
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether `Cache-Control` (one or more headers joined by commas) forbids a shared cache to
/// keep the answer: `no-store`, or `private` (with or without a field list).
fn forbids_storing(cache_control: &str) -> bool {
    cache_control.split(',').any(|directive| {
        let name = directive.split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("private")
    })
}

/// The longest text taken for an overload notice: the notices servers send are one or two short
/// sentences, and a longer text is an answer.
const MAX_NOTICE_CHARS: usize = 200;

/// One sentence of an overload or rate-limit notice, lowercased, with spaces collapsed.
static NOTICE_SENTENCE: LazyLock<Regex> = LazyLock::new(|| {
    let sentence = [
        // "The server is overloaded", "That model is currently overloaded with other requests"
        r"(?:(?:the|that|this|our) )?(?:server|service|model|engine|api|system|backend|upstream)s? (?:is|are) (?:currently |temporarily |too )?(?:overloaded|busy|unavailable|at capacity|over capacity)(?: with other requests)?",
        r"(?:server|service|model|engine|system) (?:overloaded|busy|unavailable)",
        // "Rate limit exceeded", "rate_limit_exceeded", "429 Too Many Requests"
        r"(?:http )?(?:429 )?(?:rate[ _-]?limit[ _-](?:exceeded|reached|error)|rate[ _-]?limited|too many requests)",
        r"you (?:have )?(?:exceeded|reached|hit) (?:your |the )?rate limit",
        // "Service Unavailable", "503 Service Temporarily Unavailable"
        r"(?:http )?(?:503 )?service (?:temporarily )?unavailable",
        // "Please try again later", "Please retry your request in a few seconds"
        r"(?:please )?(?:try|retry)(?: (?:your|the) request)? (?:again )?(?:later|in a (?:few (?:seconds|minutes)|moment|minute|while))",
        r"(?:please )?try again",
    ]
    .join("|");
    Regex::new(&format!("^(?:{sentence})$")).expect("the notice pattern is a constant")
});

/// Words a notice may wrap its sentences in ("Sorry, ...", "Error: ...").
const NOTICE_FILLER: [&str; 4] = ["error", "sorry", "oops", "unfortunately"];

/// Whether `text` is, as a whole, an overload or rate-limit notice: at most
/// [`MAX_NOTICE_CHARS`], and every sentence or clause of it one of [`NOTICE_SENTENCE`] (or a
/// "sorry"), at least one of them a notice.
pub fn is_overload_notice(text: &str) -> bool {
    if text.chars().count() > MAX_NOTICE_CHARS {
        return false;
    }
    let mut notice = false;
    for clause in text.split(['.', '!', '?', '\n', ';', ',', ':']) {
        let clause = clause.trim_matches(|c: char| c.is_whitespace() || "\"'`*_()[]<>".contains(c)).split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        if clause.is_empty() || NOTICE_FILLER.contains(&clause.as_str()) {
            continue;
        }
        if !NOTICE_SENTENCE.is_match(&clause) {
            return false;
        }
        notice = true;
    }
    notice
}

/// What a trace says about a completion (GenAI conventions): the model that answered and the
/// tokens it counted (`usage`), when the answer says.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
}

/// The [`Summary`] of a `chat.completion` (as [`StorePolicy::check`] gives it).
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
mod tests;
