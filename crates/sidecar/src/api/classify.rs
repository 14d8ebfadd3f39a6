//! `POST /v1/classify` on the admin port: the routing decision for texts without sending traffic.
//!
//! Body: `{"text": "..."}` or `{"texts": ["...", ...]}` (at most [`MAX_TEXTS`]). Each result is
//! the decision a routed request with that text as its only user message would get (category,
//! confidence, the head's top scores, model, reasoning, body patch), how much of it the encoder
//! could read (`reading`: unknown-token share, truncation, and whether the semantic cache may
//! match it), the jailbreak score and action when detection is configured, plus timings.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use vane_model::batching::EmbedError;

use super::{Reply, error};
use crate::pipeline::Pipeline;

pub const MAX_TEXTS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
}


pub async fn classify(State(pipeline): State<Arc<Pipeline>>, body: Result<Json<ClassifyRequest>, JsonRejection>) -> Reply {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid request body: {}", e.body_text()), "invalid_request"),
    };
    let texts = match (req.text, req.texts) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) if !ts.is_empty() && ts.len() <= MAX_TEXTS => ts,
        (None, Some(ts)) => return error(StatusCode::BAD_REQUEST, format!("'texts' must hold 1 to {MAX_TEXTS} strings, got {}.", ts.len()), "invalid_request"),
        _ => return error(StatusCode::BAD_REQUEST, "Give exactly one of 'text' or 'texts'.", "invalid_request"),
    };
    let started = Instant::now();
    // Embedded concurrently so that the encoder thread batches them.
    let handles: Vec<_> = texts.iter().map(|t| { let q = pipeline.embedder().clone(); let t = t.clone(); tokio::spawn(async move { q.embed(t).await }) }).collect();
    let mut embeddings = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(Ok(e)) => embeddings.push(e),
            Ok(Err(EmbedError::Overloaded)) => return error(StatusCode::SERVICE_UNAVAILABLE, "The encoder queue is full; try again.", "overloaded"),
            Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "encoder_error"),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "encoder_error"),
        }
    }
    let embed_ms = started.elapsed().as_secs_f64() * 1e3;
    let micros = |t: Instant| (t.elapsed().as_secs_f64() * 1e6 * 10.0).round() / 10.0;
    let policy = pipeline.policy();
    let mut results = Vec::with_capacity(texts.len());
    for (text, e) in texts.iter().zip(&embeddings) {
        let t0 = Instant::now();
        // What the Route RPC would do with the prompt: unreadable ones go to the default model.
        let unread = policy.cache_policy.unread(&e.reading);
        let decision = if policy.decider.can_read(&e.reading) { policy.decider.decide(&e.vector, None) } else { policy.decider.decide_unreadable(None) };
        let decision = policy.decider.in_language(decision, e.reading.language);
        let decide_us = micros(t0);
        let t0 = Instant::now();
        let jailbreak = match pipeline.jailbreak_opinion(&policy, text, &e.vector, Some(&decision.category)).await {
            Ok(j) => j,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "encoder_error"),
        };
        let safety_us = micros(t0);
        let mut v = serde_json::to_value(&decision).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("decide_us".into(), json!(decide_us));
            // How much the encoder read, and whether the semantic cache may match on it.
            obj.insert(
                "reading".into(),
                json!({"tokens": e.reading.tokens, "unknown_tokens": e.reading.unknown, "unknown_share": e.reading.unknown_share(), "truncated": e.reading.truncated, "foreign_language": e.reading.foreign, "semantic_cache": unread.map_or("eligible", |u| u.name())}),
            );
            if let Some((score, action)) = jailbreak {
                obj.insert("jailbreak".into(), json!({"score": score, "action": action}));
                obj.insert("safety_us".into(), json!(safety_us));
            }
        }
        results.push(v);
    }
    (StatusCode::OK, Json(json!({"results": results, "timings": {"embed_ms": (embed_ms * 1e3).round() / 1e3, "texts": texts.len()}})))
}
