//! The routing decision for one prompt, from its embedding:
//! category (example utterances, then the trained head) → the category's best model →
//! cost-aware step down to a smaller model → conversation stickiness → reasoning settings.
//!
//! Everything here is dot products over the shared embedding: no second encoder pass.

pub mod config;
pub mod conversation;
pub mod examples;
mod heads;
pub mod jailbreak;
pub mod pii;
pub mod pii_policy;
pub mod reasoning;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use vane_model::batching::{EmbedError, EmbedQueue};
use vane_model::head::{Head, argmax};
use vane_model::language::Language;

use crate::config::{Category, CostAwareConfig, ModelInfo, MultiTurnConfig, ReasoningFamily, RoutingConfig};
use conversation::{Conversations, State};
use examples::Classifier;
pub use heads::Heads;

/// Why the decider could not be built from a configuration that passed [`Heads::load`].
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("embedding category examples: {0}")]
    Embed(#[from] EmbedError),
    /// A head was trained over another encoder.
    #[error("{field}: the head takes {head} dimensions, the encoder gives {encoder}")]
    Dimension { field: &'static str, head: usize, encoder: usize },
    /// The configuration names a head that was not read: it was parsed, not loaded.
    #[error("{field}: the head was not read (load the configuration with Config::load)")]
    NotRead { field: &'static str },
    #[error("{0}")]
    Pii(String),
}

/// The category name when no category is confident enough.
pub const DEFAULT_CATEGORY: &str = "default";

pub struct Decider {
    aliases: HashSet<String>,
    default_model: String,
    confidence_floor: f32,
    example_similarity: f32,
    max_unknown_share: f32,
    categories: HashMap<String, Category>,
    examples: Classifier,
    head: Option<Head>,
    models: BTreeMap<String, ModelInfo>,
    families: BTreeMap<String, ReasoningFamily>,
    default_effort: String,
    cost_aware: Option<CostAware>,
    pub multi_turn: MultiTurnConfig,
    /// Shared, so that a reloaded decider can keep what this one remembered ([`Decider::keep_conversations`]).
    pub conversations: std::sync::Arc<Conversations>,
}

struct CostAware {
    head: Head,
    success: usize,
    config: CostAwareConfig,
}

/// What the router decided for a prompt, with the evidence (for headers, logs and /v1/classify).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub model: String,
    pub category: String,
    pub confidence: f32,
    /// "examples", "head", "none", or "unreadable" (the encoder could not read the prompt, so
    /// nothing was asked and it went to the default model): what assigned the category.
    pub source: &'static str,
    /// Whether the model is asked to reason; `None` when it has no reasoning family.
    pub reasoning: Option<bool>,
    /// The JSON merge patch for the request body (reasoning settings), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_patch: Option<serde_json::Value>,
    /// The cost-aware head's predicted success of the small model, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub small_model_success: Option<f32>,
    /// The conversation kept its earlier model instead of `wanted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_from_conversation: Option<String>,
    /// The head's probabilities, most probable first (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<(String, f32)>,
    /// The prompt's language ([`vane_model::language`]), once [`Decider::in_language`] saw it.
    pub language: &'static str,
    /// The model chosen before the language moved the request to one that speaks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_for_language: Option<String>,
}

struct Categorized {
    name: String,
    confidence: f32,
    source: &'static str,
    /// Whether the category cleared its floor (the default category never does).
    confident: bool,
    scores: Vec<(String, f32)>,
}

impl Decider {
    /// Embeds every category's examples once, up front; `heads` are those the configuration
    /// names, already read and checked against it.
    pub async fn build(config: &RoutingConfig, heads: &Heads, embedder: &EmbedQueue) -> Result<Decider, RoutingError> {
        for (field, head) in [("routing.head", &heads.routing), ("routing.cost_aware.head", &heads.cost_aware)] {
            if let Some(h) = head
                && h.dim() != embedder.dim()
            {
                return Err(RoutingError::Dimension { field, head: h.dim(), encoder: embedder.dim() });
            }
        }
        for (field, named, read) in [("routing.head", config.head.is_some(), heads.routing.is_some()), ("routing.cost_aware.head", config.cost_aware.is_some(), heads.cost_aware.is_some())] {
            if named && !read {
                return Err(RoutingError::NotRead { field });
            }
        }
        let head = heads.routing.clone();
        let mut with_examples = Vec::new();
        for c in config.categories.iter().filter(|c| !c.examples.is_empty()) {
            let mut vectors = Vec::new();
            for example in &c.examples {
                vectors.push(embedder.embed(example.clone()).await?.vector);
            }
            with_examples.push((c.name.clone(), vectors));
        }
        let cost_aware = match (&config.cost_aware, &heads.cost_aware) {
            (Some(c), Some(head)) => {
                let success = heads::label(head, &c.success_label).unwrap_or(0);
                Some(CostAware { head: head.clone(), success, config: c.clone() })
            }
            _ => None,
        };
        let mut families: BTreeMap<String, ReasoningFamily> =
            ["qwen3", "deepseek", "gpt-oss"].into_iter().filter_map(|n| Some((n.to_string(), reasoning::builtin(n)?))).collect();
        families.extend(config.reasoning_families.clone());
        let mt = config.multi_turn.clone();
        Ok(Decider {
            aliases: config.aliases.iter().cloned().collect(),
            default_model: config.default_model.clone(),
            confidence_floor: config.confidence_floor,
            max_unknown_share: config.max_unknown_share,
            example_similarity: config.example_similarity,
            categories: config.categories.iter().map(|c| (c.name.clone(), c.clone())).collect(),
            examples: Classifier::new(with_examples),
            head,
            models: config.models.clone(),
            families,
            default_effort: config.default_reasoning_effort.clone(),
            cost_aware,
            conversations: std::sync::Arc::new(Conversations::new(mt.max_conversations, Duration::from_secs(mt.ttl_seconds))),
            multi_turn: mt,
        })
    }

    /// Takes over the conversations `old` remembers (a configuration reload), unless their bounds
    /// changed: conversations then start afresh, as after a restart.
    pub fn keep_conversations(&mut self, old: &Decider) {
        let (a, b) = (&self.multi_turn, &old.multi_turn);
        if (a.max_conversations, a.ttl_seconds) == (b.max_conversations, b.ttl_seconds) {
            self.conversations = old.conversations.clone();
        }
    }

    /// Whether a requested model name asks Vane to choose.
    pub fn is_alias(&self, model: &str) -> bool {
        self.aliases.contains(model)
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Decides for a prompt whose (conversation-aware) embedding is `embedding`; `previous` is
    /// what the conversation's earlier turn decided, if known.
    pub fn decide(&self, embedding: &[f32], previous: Option<&State>) -> Decision {
        self.decide_as(self.categorize(embedding), Some(embedding), previous)
    }

    /// Whether the encoder read enough of a prompt for its embedding to be routed on
    /// (`routing.max_unknown_share`); otherwise [`Self::decide_unreadable`].
    pub fn can_read(&self, reading: &vane_model::Reading) -> bool {
        !reading.unreadable(self.max_unknown_share)
    }

    /// The decision for a prompt the encoder mostly could not read ([`vane_model::Reading`]):
    /// its embedding says next to nothing, so no head is asked and it goes to the default model,
    /// in the default category, with source "unreadable".
    pub fn decide_unreadable(&self, previous: Option<&State>) -> Decision {
        let c = Categorized { name: DEFAULT_CATEGORY.into(), confidence: 0.0, source: "unreadable", confident: false, scores: Vec::new() };
        self.decide_as(c, None, previous)
    }

    fn decide_as(&self, c: Categorized, embedding: Option<&[f32]>, previous: Option<&State>) -> Decision {
        let category = self.categories.get(&c.name).filter(|_| c.confident);
        let best = category.and_then(Category::best);
        let (wanted, best_reasoning) = best.map_or((self.default_model.as_str(), false), |(m, r)| (m, r));
        let mut model = wanted.to_string();

        let mut small_model_success = None;
        if let (Some(ca), Some(embedding)) = (self.cost_aware.as_ref().filter(|ca| ca.config.large_model == model), embedding) {
            let p = ca.head.predict(embedding).get(ca.success).copied().unwrap_or(0.0);
            small_model_success = Some(p);
            if p >= ca.config.bar {
                model.clone_from(&ca.config.small_model);
            }
        }

        let mut kept_from_conversation = None;
        if let Some(prev) = previous.filter(|p| self.multi_turn.sticky && p.model != model) {
            // Move a conversation only up, and only when the new turn clearly needs it.
            let margin = if c.source == "examples" { self.example_similarity } else { self.confidence_floor } + self.multi_turn.upgrade_margin;
            let upgrade = self.cost(&model) > self.cost(&prev.model) && c.confident && c.confidence >= margin;
            if !upgrade {
                kept_from_conversation = Some(std::mem::replace(&mut model, prev.model.clone()));
            }
        }

        let use_reasoning = if model == wanted { best_reasoning } else { category.is_some_and(|c| c.use_reasoning) };
        let effort = category.and_then(|c| c.reasoning_effort.as_deref()).unwrap_or(&self.default_effort);
        let family = self.models.get(&model).and_then(|m| m.reasoning_family.as_ref()).and_then(|f| self.families.get(f));
        let body_patch = family.map(|f| reasoning::patch(f, use_reasoning, effort));
        Decision {
            reasoning: family.map(|_| use_reasoning),
            body_patch,
            model,
            category: if category.is_some() || c.confident { c.name } else { DEFAULT_CATEGORY.into() },
            confidence: c.confidence,
            source: c.source,
            small_model_success,
            kept_from_conversation,
            scores: c.scores,
            language: Language::Und.code(),
            moved_for_language: None,
        }
    }

    /// The decision for a prompt in `language`: unchanged if its model speaks it
    /// (`routing.models.<m>.languages`), else moved to the first that does among the category's
    /// candidates (best score first), the default model, then every model from the cheapest. When
    /// none does, it stays where it was. Undetermined text is every model's.
    pub fn in_language(&self, mut d: Decision, language: Language) -> Decision {
        d.language = language.code();
        let speaks = |m: &str| language == Language::Und || self.models.get(m).and_then(|i| i.languages.as_ref()).is_none_or(|l| l.contains(&language));
        if speaks(&d.model) {
            return d;
        }
        let category = self.categories.get(&d.category);
        let mut scored: Vec<&config::ModelScore> = category.map(|c| c.model_scores.iter().collect()).unwrap_or_default();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut by_cost: Vec<(&String, &ModelInfo)> = self.models.iter().collect();
        by_cost.sort_by(|a, b| a.1.cost.total_cmp(&b.1.cost));
        let candidates = category.and_then(|c| c.model.as_deref()).into_iter()
            .chain(scored.iter().map(|s| s.model.as_str()))
            .chain([self.default_model.as_str()])
            .chain(by_cost.iter().map(|(m, _)| m.as_str()));
        let Some(model) = candidates.into_iter().find(|m| speaks(m)).map(str::to_string) else { return d };
        let on = d.reasoning.unwrap_or(category.is_some_and(|c| c.use_reasoning));
        let effort = category.and_then(|c| c.reasoning_effort.as_deref()).unwrap_or(&self.default_effort);
        let family = self.models.get(&model).and_then(|m| m.reasoning_family.as_ref()).and_then(|f| self.families.get(f));
        d.reasoning = family.map(|_| on);
        d.body_patch = family.map(|f| reasoning::patch(f, on, effort));
        d.moved_for_language = Some(std::mem::replace(&mut d.model, model));
        d
    }

    /// Example categories first (they are the operator's explicit intent), then the head.
    fn categorize(&self, embedding: &[f32]) -> Categorized {
        let by_example = self.examples.classify(embedding);
        if let Some(e) = by_example.as_ref().filter(|e| e.score >= self.example_similarity) {
            return Categorized { name: e.category.clone(), confidence: e.score, source: "examples", confident: true, scores: Vec::new() };
        }
        if let Some(head) = &self.head {
            let p = head.predict(embedding);
            let (i, top) = argmax(&p);
            let mut scores: Vec<(String, f32)> = head.labels().iter().cloned().zip(p).collect();
            scores.sort_by(|a, b| b.1.total_cmp(&a.1));
            scores.truncate(5);
            let name = head.labels().get(i).cloned().unwrap_or_default();
            return Categorized { name, confidence: top, source: "head", confident: top >= self.confidence_floor, scores };
        }
        match by_example {
            Some(e) => Categorized { name: e.category, confidence: e.score, source: "examples", confident: false, scores: Vec::new() },
            None => Categorized { name: DEFAULT_CATEGORY.into(), confidence: 0.0, source: "none", confident: false, scores: Vec::new() },
        }
    }

    /// The reasoning flag and body patch for `model` (after a change of model, e.g. by PII policy).
    pub fn reasoning_for(&self, model: &str, on: bool) -> (Option<bool>, Option<serde_json::Value>) {
        let family = self.models.get(model).and_then(|m| m.reasoning_family.as_ref()).and_then(|f| self.families.get(f));
        (family.map(|_| on), family.map(|f| reasoning::patch(f, on, &self.default_effort)))
    }

    /// Relative cost from `routing.models` (1 when not listed).
    pub fn cost(&self, model: &str) -> f64 {
        self.models.get(model).map_or(1.0, |m| m.cost)
    }
}

/// The text of the user turns before the last one, oldest first, from the request's context
/// (canonical JSON with `messages`; the last user message's text is the prompt, not in it).
pub fn earlier_user_turns(context: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Context {
        #[serde(default)]
        messages: Vec<Message>,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        role: String,
        #[serde(default)]
        content: serde_json::Value,
    }
    let Ok(ctx) = serde_json::from_str::<Context>(context) else { return Vec::new() };
    let mut turns: Vec<String> = ctx.messages.iter().filter(|m| m.role == "user").map(|m| text_of(&m.content)).collect();
    turns.pop(); // the last user turn: its text is the prompt
    turns
}

fn text_of(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(|t| t.as_str()) == Some("text"))
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
