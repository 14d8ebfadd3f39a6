use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use vane_model::batching::BatchPolicy;
use vane_model::head::{Kind, Meta, Params};
use vane_model::metrics::EncoderMetrics;
use vane_model::{Encoder, ModelError};

use super::conversation::State;
use super::*;
use crate::config::SafetyConfig;

/// Three topics on three axes: maths, history, greetings; anything else sits between maths and history, away from greetings.
struct Axes;

fn axis(text: &str) -> Vec<f32> {
    let t = text.to_lowercase();
    if t.contains("integral") || t.contains("solve") {
        vec![1.0, 0.0, 0.0]
    } else if t.contains("war") {
        vec![0.0, 1.0, 0.0]
    } else if t.contains("hello") {
        vec![0.0, 0.0, 1.0]
    } else {
        vec![0.5, 0.5, -std::f32::consts::FRAC_1_SQRT_2]
    }
}

impl Encoder for Axes {
    fn dim(&self) -> usize {
        3
    }
    fn tokenizer(&self) -> vane_model::Tokenizer {
        vane_model::byte_tokenizer()
    }
    fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(batch.iter().map(|ids| axis(&ids.iter().map(|&b| b as u8 as char).collect::<String>())).collect())
    }
}

/// A softmax head whose logit for label i is `scale * x[i]`.
fn write_head(dir: &Path, name: &str, labels: &[&str], scale: f32) -> PathBuf {
    let mut p = Params::zeros(Kind::Softmax, 3, 0, labels.len());
    for i in 0..labels.len().min(3) {
        p.data[i * 3 + i] = scale;
    }
    let path = dir.join(name);
    Head::new(labels.iter().map(|l| l.to_string()).collect(), p, Meta::default()).save(&path).unwrap();
    path
}

fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("vane-routing-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `routing:` section, indented as in vane.yaml.
const ROUTING: &str = r#"
  default_model: general
  confidence_floor: 0.6
  head: topics.json
  models:
    small: { cost: 0.1, reasoning_family: qwen3 }
    general: { cost: 1, reasoning_family: gpt-oss }
    big: { cost: 5, reasoning_family: deepseek }
  categories:
    - name: math
      use_reasoning: true
      reasoning_effort: high
      model_scores: [{ model: general, score: 0.4 }, { model: big, score: 0.9 }]
    - name: history
      model: general
    - name: greeting
      model: small
      examples: ["hello there"]
"#;

/// The section parsed, its paths taken from `dir`, its heads read and checked.
fn section(text: &str, dir: &Path) -> (RoutingConfig, Heads, Vec<String>) {
    let mut config: RoutingConfig = serde_yaml_ng::from_str(&text.replace("\n  ", "\n")).unwrap();
    config.resolve(dir);
    let mut errors = Vec::new();
    config.check(&mut errors);
    let heads = Heads::load(&config, &SafetyConfig::default(), "minilm", &mut errors);
    (config, heads, errors)
}

fn queue() -> EmbedQueue {
    EmbedQueue::start(Box::new(Axes), BatchPolicy { max_batch: 8, max_batch_tokens: 4096, max_wait: Duration::ZERO, queue: 64, max_pass: Duration::ZERO }, EncoderMetrics::default())
}

async fn routing(extra: &str) -> Decider {
    let dir = temp_dir();
    write_head(&dir, "topics.json", &["math", "history", "other"], 10.0);
    write_head(&dir, "success.json", &["0", "1"], 0.0);
    let (config, heads, errors) = section(&format!("{ROUTING}{extra}"), &dir);
    assert!(errors.is_empty(), "{errors:?}");
    Decider::build(&config, &heads, &queue()).await.unwrap()
}

#[tokio::test]
async fn head_category_picks_the_best_scored_model_and_its_reasoning() {
    let r = routing("").await;
    let d = r.decide(&axis("solve x"), None);
    assert_eq!((d.model.as_str(), d.category.as_str(), d.source), ("big", "math", "head"));
    assert!(d.confidence > 0.99);
    assert_eq!(d.reasoning, Some(true));
    assert_eq!(d.body_patch, Some(json!({"chat_template_kwargs": {"thinking": true}})));
    assert_eq!(d.scores[0].0, "math");

    let d = r.decide(&axis("the war"), None);
    assert_eq!((d.model.as_str(), d.category.as_str()), ("general", "history"));
    assert_eq!(d.body_patch, Some(json!({"reasoning_effort": "low"})), "history does not reason");
}

#[tokio::test]
async fn an_unreadable_prompt_goes_to_the_default_model_without_asking_a_head() {
    let r = routing("").await;
    let d = r.decide_unreadable(None);
    assert_eq!((d.model.as_str(), d.category.as_str(), d.source), ("general", DEFAULT_CATEGORY, "unreadable"));
    assert_eq!((d.confidence, d.reasoning), (0.0, Some(false)));
    assert!(d.scores.is_empty() && d.small_model_success.is_none());
}

#[tokio::test]
async fn below_the_floor_goes_to_the_default_model() {
    let r = routing("").await;
    let d = r.decide(&axis("recommend a trail"), None);
    assert_eq!((d.model.as_str(), d.category.as_str()), ("general", DEFAULT_CATEGORY));
    assert!(d.confidence < 0.6);
    assert!(!d.scores.is_empty(), "the head's opinion is still reported");
}

#[tokio::test]
async fn example_categories_come_before_the_head() {
    let r = routing("").await;
    let d = r.decide(&axis("hello!"), None);
    assert_eq!((d.model.as_str(), d.category.as_str(), d.source), ("small", "greeting", "examples"));
    assert_eq!(d.reasoning, Some(false));
}

#[tokio::test]
async fn cost_aware_steps_down_when_the_small_model_is_predicted_to_succeed() {
    // The success head gives 0.5 for every prompt: a bar of 0.5 steps down, 0.6 does not.
    let cfg = |bar: f32| format!("  cost_aware: {{ head: success.json, bar: {bar}, small_model: small, large_model: big }}\n");
    let r = routing(&cfg(0.5)).await;
    let d = r.decide(&axis("solve x"), None);
    assert_eq!(d.model, "small");
    assert_eq!(d.small_model_success, Some(0.5));
    assert_eq!(d.body_patch, Some(json!({"chat_template_kwargs": {"enable_thinking": true}})), "the small model's family");
    let r = routing(&cfg(0.6)).await;
    assert_eq!(r.decide(&axis("solve x"), None).model, "big");
    // Only prompts headed for the large model are considered.
    let d = r.decide(&axis("the war"), None);
    assert_eq!((d.model.as_str(), d.small_model_success), ("general", None));
}

#[tokio::test]
async fn conversations_stay_unless_the_turn_clearly_needs_a_costlier_model() {
    let r = routing("").await;
    let on = |m: &str| State { model: m.into(), topic: axis("x") };
    // Confident maths after a greeting: up to the big model.
    let d = r.decide(&axis("solve x"), Some(&on("small")));
    assert_eq!((d.model.as_str(), d.kept_from_conversation.as_deref()), ("big", None));
    // A history turn in a conversation on the big model: it stays there (never down).
    let d = r.decide(&axis("the war"), Some(&on("big")));
    assert_eq!((d.model.as_str(), d.kept_from_conversation.as_deref()), ("big", Some("general")));
    assert_eq!(d.category, "history");
    // An unclear turn does not move a conversation up.
    let d = r.decide(&axis("recommend a trail"), Some(&on("small")));
    assert_eq!((d.model.as_str(), d.kept_from_conversation.as_deref()), ("small", Some("general")));
    // With stickiness off, each turn is routed on its own.
    let r = routing("  multi_turn: { sticky: false }\n").await;
    assert_eq!(r.decide(&axis("the war"), Some(&on("big"))).model, "general");
}

#[tokio::test]
async fn categories_must_be_head_labels_or_have_examples() {
    let dir = temp_dir();
    write_head(&dir, "topics.json", &["math", "history", "other"], 10.0);
    let text = ROUTING.replace("- name: history", "- name: geography");
    let (_, _, errors) = section(&text, &dir);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("routing.categories[1]: 'geography' has no examples and is not a label of routing.head"), "{errors:?}");
}

#[test]
fn a_head_that_reads_phrases_is_refused_for_routing() {
    let dir = temp_dir();
    write_head(&dir, "topics.json", &["math", "history", "other"], 10.0);
    let phrases = vane_model::head::phrases::PhraseFeatures::named(&["leak".into()]).unwrap();
    let reads_text = Head::new(vec!["0".into(), "1".into()], Params::zeros(Kind::Softmax, 4, 0, 2), Meta::default()).with_phrases(phrases);
    reads_text.save(&dir.join("success.json")).unwrap();
    let (_, heads, errors) = section(&format!("{ROUTING}  cost_aware: {{ head: success.json, bar: 0.5, small_model: small, large_model: big }}\n"), &dir);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("routing.cost_aware.head: the head also takes phrase features") && errors[0].contains("only safety.jailbreak.head"), "{errors:?}");
    assert!(heads.routing.is_some() && heads.cost_aware.is_none());
}

#[tokio::test]
async fn a_head_over_another_encoder_is_refused() {
    let dir = temp_dir();
    let p = Params::zeros(Kind::Softmax, 4, 0, 3);
    Head::new(vec!["math".into(), "history".into(), "other".into()], p, Meta::default()).save(&dir.join("topics.json")).unwrap();
    let (config, heads, errors) = section(ROUTING, &dir);
    assert!(errors.is_empty(), "{errors:?}");
    let err = Decider::build(&config, &heads, &queue()).await.err().unwrap().to_string();
    assert_eq!(err, "routing.head: the head takes 4 dimensions, the encoder gives 3");
}

#[test]
fn earlier_user_turns_come_from_the_context() {
    let ctx = json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": []}
    ]});
    assert_eq!(earlier_user_turns(&ctx.to_string()), vec!["first", "second"]);
    assert!(earlier_user_turns("not json").is_empty());
    assert!(earlier_user_turns(r#"{"messages":[{"role":"user","content":[]}]}"#).is_empty());
}

#[tokio::test]
async fn a_prompt_goes_to_a_model_that_speaks_its_language() {
    use vane_model::language::Language;
    let dir = temp_dir();
    write_head(&dir, "topics.json", &["math", "history", "other"], 10.0);
    let text = ROUTING
        .replace("big: { cost: 5, reasoning_family: deepseek }", "big: { cost: 5, reasoning_family: deepseek, languages: [en] }\n    qwen: { cost: 2, reasoning_family: qwen3, languages: [en, zh] }")
        .replace("general: { cost: 1, reasoning_family: gpt-oss }", "general: { cost: 1, reasoning_family: gpt-oss, languages: [en, fr] }")
        .replace("small: { cost: 0.1, reasoning_family: qwen3 }", "small: { cost: 0.1, reasoning_family: qwen3, languages: [en] }");
    let (config, heads, errors) = section(&text, &dir);
    assert!(errors.is_empty(), "{errors:?}");
    let r = Decider::build(&config, &heads, &queue()).await.unwrap();

    let d = r.in_language(r.decide(&axis("solve x"), None), Language::En);
    assert_eq!((d.model.as_str(), d.language, d.moved_for_language.as_deref()), ("big", "en", None));
    // math's candidates (big, general) speak no Chinese, nor does the default model: the
    // cheapest model that does, with its own reasoning settings and the category's wish to reason.
    let d = r.in_language(r.decide(&axis("solve x"), None), Language::Zh);
    assert_eq!((d.model.as_str(), d.language, d.moved_for_language.as_deref()), ("qwen", "zh", Some("big")));
    assert_eq!(d.body_patch, Some(json!({"chat_template_kwargs": {"enable_thinking": true}})));
    // French: big does not speak it, general (the next candidate) does.
    let d = r.in_language(r.decide(&axis("solve x"), None), Language::Fr);
    assert_eq!((d.model.as_str(), d.moved_for_language.as_deref()), ("general", Some("big")));
    // Nobody speaks Korean: the decision stands.
    let d = r.in_language(r.decide(&axis("hello!"), None), Language::Ko);
    assert_eq!((d.model.as_str(), d.moved_for_language.as_deref()), ("small", None));
    let d = r.in_language(r.decide(&axis("the war"), None), Language::Und);
    assert_eq!((d.model.as_str(), d.language), ("general", "und"), "undetermined text is every model's");
}
