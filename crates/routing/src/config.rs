//! `routing:` (category, model, reasoning, conversations) and `safety:` (PII, jailbreak).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Which PII types each model may receive, and what to do about the others.
    #[serde(default)]
    pub pii: Option<PiiPolicyConfig>,
    /// Jailbreak and prompt-injection detection (a binary head over the embedding).
    #[serde(default)]
    pub jailbreak: Option<JailbreakConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailbreakConfig {
    pub head: PathBuf,
    /// The head's label meaning "this is a jailbreak".
    #[serde(default = "defaults::success_label")]
    pub positive_label: String,
    /// Score (the positive label's probability, most suspicious window) at which to act.
    pub threshold: f32,
    #[serde(default)]
    pub action: JailbreakAction,
    /// Per routing category: another threshold or action (e.g. `off` for a red-team category).
    #[serde(default)]
    pub categories: BTreeMap<String, JailbreakOverride>,
    /// Windows (one encoder pass each) one request's client text may take: the prompt's beyond
    /// the shared embedding, and those of every other message and text part.
    #[serde(default = "defaults::max_windows")]
    pub max_windows: usize,
    /// For a request whose text cannot be judged in full (more windows than `max_windows`, or
    /// windows not embedded by `deadline_ms`).
    #[serde(default)]
    pub oversize: Oversize,
    /// How long after the Route began the windows may take; past it the rest is unjudged. Keep
    /// it under the filter's `timeout_ms` (200 by default), or the filter gives up first.
    #[serde(default = "defaults::deadline_ms")]
    pub deadline_ms: u64,
}

/// What happens to text the jailbreak check could not judge in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Refuse: 400 `prompt_too_long_to_judge` over the budget, 503
    /// `jailbreak_check_unavailable` when the windows could not be done in time.
    #[default]
    Block,
    /// Judge what fits and forward with `x-vane-jailbreak: <score>` (never cached).
    Flag,
    /// Judge what fits (windows with jailbreak wording first); logged as `unjudged_allow`.
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JailbreakAction {
    /// 403 with code `jailbreak_detected`; nothing reaches the model.
    #[default]
    Block,
    /// Forward, with `x-vane-jailbreak: <score>` to the upstream and the client; never cached.
    Flag,
    Off,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailbreakOverride {
    pub threshold: Option<f32>,
    pub action: Option<JailbreakAction>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Model names that mean "let Vane choose"; any other model name is kept as asked.
    #[serde(default = "defaults::aliases")]
    pub aliases: Vec<String>,
    /// Where a prompt goes when no category is confident enough.
    pub default_model: String,
    /// Below this head probability, the prompt is not given the head's category.
    #[serde(default = "defaults::confidence_floor")]
    pub confidence_floor: f32,
    /// Below this similarity to a category's examples, the prompt is not in that category.
    #[serde(default = "defaults::example_similarity")]
    pub example_similarity: f32,
    /// Above this share of tokens unknown to the encoder's vocabulary the encoder could not
    /// read the prompt: it goes to `default_model` (category `default`) instead of wherever a
    /// head would guess from `[UNK]` tokens. English stays below 0.11, 98% of CMMLU's Chinese
    /// questions are above 0.2 (docs/cache-threshold.md, "Text the encoder cannot read").
    #[serde(default = "defaults::routing_max_unknown_share")]
    pub max_unknown_share: f32,
    #[serde(default)]
    pub categories: Vec<Category>,
    /// A trained classifier head over the embedding (`vane train`), e.g.
    /// `heads/mmlu_pro_categories.json`; relative to this file. Its labels are categories.
    #[serde(default)]
    pub head: Option<PathBuf>,
    /// What Vane knows about each model: relative cost and reasoning family.
    #[serde(default)]
    pub models: BTreeMap<String, ModelInfo>,
    /// How a family switches reasoning on; qwen3, deepseek and gpt-oss are built in.
    #[serde(default)]
    pub reasoning_families: BTreeMap<String, ReasoningFamily>,
    /// Effort for `reasoning_effort` families when a category asks for reasoning.
    #[serde(default = "defaults::reasoning_effort")]
    pub default_reasoning_effort: String,
    #[serde(default)]
    pub multi_turn: MultiTurnConfig,
    /// Send a prompt to the smaller model when a head predicts it will answer correctly.
    #[serde(default)]
    pub cost_aware: Option<CostAwareConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// A label of the head, or (with `examples`) a category of its own.
    pub name: String,
    /// Shorthand for `model_scores: [{model: X, score: 1}]`.
    #[serde(default)]
    pub model: Option<String>,
    /// Candidate models; the best score wins.
    #[serde(default)]
    pub model_scores: Vec<ModelScore>,
    #[serde(default)]
    pub use_reasoning: bool,
    /// For `reasoning_effort` families [default: routing.default_reasoning_effort].
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Example prompts; a prompt belongs to the category whose examples it is most similar to.
    #[serde(default)]
    pub examples: Vec<String>,
}

impl Category {
    /// The model with the best score (the first on ties), and whether it should reason.
    pub fn best(&self) -> Option<(&str, bool)> {
        if let Some(m) = &self.model {
            return Some((m, self.use_reasoning));
        }
        let mut best: Option<&ModelScore> = None;
        for s in &self.model_scores {
            if best.is_none_or(|b| s.score > b.score) {
                best = Some(s);
            }
        }
        best.map(|s| (s.model.as_str(), s.use_reasoning.unwrap_or(self.use_reasoning)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelScore {
    pub model: String,
    pub score: f32,
    /// Overrides the category's `use_reasoning` for this model.
    #[serde(default)]
    pub use_reasoning: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Relative price; conversations only move to costlier models.
    #[serde(default = "defaults::cost")]
    pub cost: f64,
    #[serde(default)]
    pub reasoning_family: Option<String>,
    /// The languages the model answers in (`[en, zh]`); a prompt in another goes to a model that
    /// speaks it. Unset: every language.
    #[serde(default)]
    pub languages: Option<Vec<vane_model::language::Language>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReasoningFamily {
    pub r#type: ReasoningType,
    /// The field to set: `chat_template_kwargs.<parameter>` or the top-level `<parameter>`.
    pub parameter: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningType {
    /// `chat_template_kwargs: {<parameter>: true|false}` (vLLM / SGLang chat templates).
    ChatTemplateKwargs,
    /// `<parameter>: <effort>` (OpenAI-style `reasoning_effort`); "low" when reasoning is off.
    ReasoningEffort,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiTurnConfig {
    /// Weight of the earlier user turns against the new one when classifying (0: last turn only).
    pub history_weight: f32,
    /// Keep a conversation on the model it started with...
    pub sticky: bool,
    /// ...unless the new turn needs a costlier model with at least this much more confidence
    /// than the routing floor.
    pub upgrade_margin: f32,
    /// Conversations remembered (least recently seen forgotten first), and for how long.
    pub max_conversations: usize,
    pub ttl_seconds: u64,
}

impl Default for MultiTurnConfig {
    fn default() -> Self {
        MultiTurnConfig { history_weight: 0.5, sticky: true, upgrade_margin: 0.2, max_conversations: 100_000, ttl_seconds: 3600 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostAwareConfig {
    /// A binary head predicting whether `small_model` answers the prompt correctly.
    pub head: PathBuf,
    /// The head's label meaning "the small model succeeds".
    #[serde(default = "defaults::success_label")]
    pub success_label: String,
    /// Use the small model when its predicted success is at least this.
    pub bar: f32,
    pub small_model: String,
    /// Only prompts routed to this model are considered for the small one.
    pub large_model: String,
}
/// What to do with PII a model may not receive ([`crate::pii_policy`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    Block,
    Route,
    Redact,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiPolicyConfig {
    pub action: PiiAction,
    /// PII types every model may receive [default: none].
    #[serde(default)]
    pub default_allow: Vec<String>,
    /// Per model: the PII types it may receive (`all` for every type).
    #[serde(default)]
    pub models: BTreeMap<String, ModelPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    pub allow: Vec<String>,
}

impl RoutingConfig {
    /// Every problem with this section, each as `routing.<field>: <why>`.
    pub fn check(&self, errors: &mut Vec<String>) {
        let mut check = |ok: bool, msg: String| if !ok { errors.push(format!("routing.{msg}")) };
        check(!self.default_model.is_empty(), "default_model: must not be empty".into());
        check((0.0..=1.0).contains(&self.confidence_floor), "confidence_floor: must be between 0 and 1".into());
        check((0.0..=1.0).contains(&self.max_unknown_share), "max_unknown_share: must be between 0 and 1".into());
        check(self.aliases.iter().all(|a| !a.is_empty()), "aliases: names must not be empty".into());
        check((0.0..=1.0).contains(&self.example_similarity), "example_similarity: must be between 0 and 1".into());
        for (i, c) in self.categories.iter().enumerate() {
            let at = format!("categories[{i}]");
            check(!c.name.is_empty(), format!("{at}.name: must not be empty"));
            check(c.model.is_some() == c.model_scores.is_empty(), format!("{at}: give either model or model_scores"));
            check(c.model.as_ref().is_none_or(|m| !m.is_empty()), format!("{at}.model: must not be empty"));
            for (j, s) in c.model_scores.iter().enumerate() {
                check(!s.model.is_empty(), format!("{at}.model_scores[{j}].model: must not be empty"));
                check(s.score.is_finite(), format!("{at}.model_scores[{j}].score: must be a number"));
            }
            check(!c.examples.iter().any(String::is_empty), format!("{at}.examples: must not contain empty prompts"));
            check(!c.examples.is_empty() || self.head.is_some(), format!("{at}.examples: give example prompts, or set routing.head so that '{}' is one of its labels", c.name));
            let dup = self.categories[..i].iter().any(|o| o.name == c.name);
            check(!dup, format!("{at}.name: '{}' is defined twice", c.name));
        }
        for (name, m) in &self.models {
            check(m.cost.is_finite() && m.cost >= 0.0, format!("models.{name}.cost: must be a number >= 0"));
            if let Some(f) = &m.reasoning_family {
                let known = self.reasoning_families.contains_key(f) || crate::reasoning::builtin(f).is_some();
                check(known, format!("models.{name}.reasoning_family: unknown family '{f}' (built in: qwen3, deepseek, gpt-oss; or define it under routing.reasoning_families)"));
            }
        }
        let mt = &self.multi_turn;
        check((0.0..=4.0).contains(&mt.history_weight), "multi_turn.history_weight: must be between 0 and 4".into());
        check((0.0..=1.0).contains(&mt.upgrade_margin), "multi_turn.upgrade_margin: must be between 0 and 1".into());
        check(mt.max_conversations >= 1, "multi_turn.max_conversations: must be at least 1".into());
        if let Some(c) = &self.cost_aware {
            check((0.0..=1.0).contains(&c.bar), "cost_aware.bar: must be between 0 and 1".into());
            check(!c.small_model.is_empty() && !c.large_model.is_empty(), "cost_aware: small_model and large_model must not be empty".into());
        }
    }

    /// Relative paths are taken from `base` (the directory of the config file).
    pub fn resolve(&mut self, base: &Path) {
        if let Some(p) = &mut self.head {
            *p = base.join(&*p);
        }
        if let Some(c) = &mut self.cost_aware {
            c.head = base.join(&c.head);
        }
    }
}

impl SafetyConfig {
    /// Every problem with this section, each as `safety.<field>: <why>`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if let Some(p) = &self.pii
            && let Err(e) = crate::pii_policy::PiiPolicy::new(p)
        {
            errors.push(e);
        }
        if let Some(j) = &self.jailbreak {
            let mut check = |ok: bool, msg: String| if !ok { errors.push(format!("safety.jailbreak.{msg}")) };
            let thresholds = std::iter::once(("threshold".to_string(), j.threshold))
                .chain(j.categories.iter().filter_map(|(n, o)| o.threshold.map(|t| (format!("categories.{n}.threshold"), t))));
            for (at, t) in thresholds {
                check((0.0..=1.0).contains(&t), format!("{at}: must be between 0 and 1"));
            }
            check((1..=100_000).contains(&j.max_windows), "max_windows: must be between 1 and 100000".into());
            check((1..=60_000).contains(&j.deadline_ms), "deadline_ms: must be between 1 and 60000".into());
        }
    }

    /// Relative paths are taken from `base` (the directory of the config file).
    pub fn resolve(&mut self, base: &Path) {
        if let Some(j) = &mut self.jailbreak {
            j.head = base.join(&j.head);
        }
    }
}

mod defaults {
    pub fn routing_max_unknown_share() -> f32 { 0.2 }
    pub fn aliases() -> Vec<String> { vec!["auto".into()] }
    pub fn confidence_floor() -> f32 { 0.5 }
    pub fn example_similarity() -> f32 { 0.45 }
    pub fn reasoning_effort() -> String { "medium".into() }
    pub fn cost() -> f64 { 1.0 }
    pub fn success_label() -> String { "1".into() }
    pub fn max_windows() -> usize { MAX_WINDOWS }
    pub fn deadline_ms() -> u64 { 120 }
    /// README "Jailbreak ... budget" has the measurement behind it.
    const MAX_WINDOWS: usize = 64;
}
