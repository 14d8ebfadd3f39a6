//! Per-model PII policy: which PII types each model may receive, and what to do when a request
//! carries others — `block` it, `route` it to a model that may receive them, or `redact` them
//! (each finding replaced by a typed placeholder such as `[EMAIL]` before the body goes upstream).
//!
//! Every message's text is scanned (system prompt, earlier turns, the new turn): all of it is
//! sent to the model.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::config::{PiiAction, PiiPolicyConfig};
use crate::pii::{self, Finding, PiiType};

/// Parses a type name from config; `all` stands for every type.
fn types_named(names: &[String], at: &str) -> Result<BTreeSet<PiiType>, String> {
    let mut out = BTreeSet::new();
    for n in names {
        if n == "all" {
            out.extend(PiiType::ALL);
        } else {
            let t = PiiType::ALL.into_iter().find(|t| t.name() == n).ok_or_else(|| {
                format!("{at}: unknown PII type '{n}' (known: all, {})", PiiType::ALL.map(PiiType::name).join(", "))
            })?;
            out.insert(t);
        }
    }
    Ok(out)
}

pub struct PiiPolicy {
    action: PiiAction,
    default_allow: BTreeSet<PiiType>,
    models: BTreeMap<String, BTreeSet<PiiType>>,
}

/// The text of every message, located so that redaction can write it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Messages {
    /// The context's `messages`, with the last user message's text removed (it is the prompt).
    messages: Vec<Value>,
    /// Index of the last user message, whose text is `prompt`.
    last_user: Option<usize>,
    prompt: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// No PII the model may not receive.
    Allowed,
    Block { types: Vec<PiiType> },
    Route { model: String, types: Vec<PiiType> },
    /// A merge patch replacing `messages` with the redacted ones.
    Redact { patch: Value, types: Vec<PiiType> },
}

impl PiiPolicy {
    pub fn new(config: &PiiPolicyConfig) -> Result<PiiPolicy, String> {
        let default_allow = types_named(&config.default_allow, "safety.pii.default_allow")?;
        let mut models = BTreeMap::new();
        for (name, m) in &config.models {
            let mut allowed = types_named(&m.allow, &format!("safety.pii.models.{name}.allow"))?;
            allowed.extend(&default_allow);
            models.insert(name.clone(), allowed);
        }
        Ok(PiiPolicy { action: config.action, default_allow, models })
    }

    fn allowed(&self, model: &str) -> &BTreeSet<PiiType> {
        self.models.get(model).unwrap_or(&self.default_allow)
    }

    /// What to do with a request for `model` whose messages are `messages`. `can_route`: the
    /// client let Vane choose the model (an explicitly named model is never swapped: blocked).
    /// `cost` orders the models a request may be routed to (cheapest first).
    pub fn check(&self, model: &str, messages: &Messages, can_route: bool, cost: impl Fn(&str) -> f64) -> (Outcome, BTreeMap<PiiType, usize>) {
        let findings = messages.findings();
        let mut counts = BTreeMap::new();
        for f in findings.iter().flat_map(|(_, fs)| fs) {
            *counts.entry(f.kind).or_insert(0) += 1;
        }
        let allowed = self.allowed(model);
        let types: Vec<PiiType> = counts.keys().copied().filter(|t| !allowed.contains(t)).collect();
        if types.is_empty() {
            return (Outcome::Allowed, counts);
        }
        let outcome = match self.action {
            PiiAction::Block => Outcome::Block { types },
            PiiAction::Route if !can_route => Outcome::Block { types },
            PiiAction::Route => {
                let found: BTreeSet<PiiType> = counts.keys().copied().collect();
                let mut fits: Vec<&String> = self.models.iter().filter(|(_, a)| found.is_subset(a)).map(|(m, _)| m).collect();
                fits.sort_by(|a, b| cost(a).total_cmp(&cost(b)).then(a.cmp(b)));
                match fits.first() {
                    Some(m) => Outcome::Route { model: (*m).clone(), types },
                    None => Outcome::Block { types },
                }
            }
            PiiAction::Redact => {
                let hide: BTreeSet<PiiType> = types.iter().copied().collect();
                Outcome::Redact { patch: json!({ "messages": messages.redacted(&findings, &hide) }), types }
            }
        };
        (outcome, counts)
    }
}

impl Messages {
    /// From the request's canonical context JSON and its prompt (see the filter's `request.rs`).
    pub fn parse(context: &str, prompt: &str) -> Messages {
        let messages = serde_json::from_str::<Value>(context)
            .ok()
            .and_then(|mut v| v.get_mut("messages").map(Value::take))
            .and_then(|m| if let Value::Array(a) = m { Some(a) } else { None })
            .unwrap_or_default();
        let last_user = messages.iter().rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        Messages { messages, last_user, prompt: prompt.to_string() }
    }

    /// Each message's text and the findings in it; the prompt stands in for the last user message.
    fn findings(&self) -> Vec<(usize, Vec<Finding>)> {
        (0..self.messages.len())
            .map(|i| {
                let text = self.text(i);
                (i, if text.is_empty() { Vec::new() } else { pii::detect(&text) })
            })
            .collect()
    }

    fn text(&self, i: usize) -> String {
        let own = match self.messages.get(i).and_then(|m| m.get("content")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        };
        if Some(i) != self.last_user {
            return own;
        }
        // The prompt (the message's `text` parts), then what the context kept of the message:
        // `input_text` and other parts with text reach the model too.
        if own.is_empty() { self.prompt.clone() } else { format!("{}\n{own}", self.prompt) }
    }

    /// The messages with every finding of a `hide` type replaced by its placeholder.
    fn redacted(&self, findings: &[(usize, Vec<Finding>)], hide: &BTreeSet<PiiType>) -> Vec<Value> {
        let mut out = self.messages.clone();
        for (i, fs) in findings {
            let keep: Vec<&Finding> = fs.iter().filter(|f| hide.contains(&f.kind)).collect();
            let Some(msg) = out.get_mut(*i).and_then(Value::as_object_mut) else { continue };
            if Some(*i) == self.last_user {
                // The context holds the prompt's non-text parts; the text goes back in front.
                // Findings past the prompt are in those parts (`text` above puts them after it).
                let in_prompt: Vec<&Finding> = keep.iter().copied().filter(|f| f.end <= self.prompt.len()).collect();
                let text = Value::String(redact(&self.prompt, &in_prompt));
                let content = match msg.get("content") {
                    Some(Value::Array(rest)) if !rest.is_empty() => {
                        let mut rest = rest.clone();
                        redact_parts(&mut rest, hide);
                        Value::Array(std::iter::once(json!({"type": "text", "text": text})).chain(rest).collect())
                    }
                    _ => text,
                };
                msg.insert("content".into(), content);
                continue;
            }
            if keep.is_empty() {
                continue;
            }
            match msg.get_mut("content") {
                Some(Value::String(s)) => *s = redact(s, &keep),
                Some(Value::Array(parts)) => redact_parts(parts, hide),
                _ => {}
            }
        }
        out
    }
}

/// Findings were located in the parts joined by newlines: redact part by part.
fn redact_parts(parts: &mut [Value], hide: &BTreeSet<PiiType>) {
    for part in parts {
        if let Some(Value::String(t)) = part.get_mut("text") {
            let found: Vec<Finding> = pii::detect(t).into_iter().filter(|f| hide.contains(&f.kind)).collect();
            *t = redact(t, &found.iter().collect::<Vec<_>>());
        }
    }
}

/// The placeholder a finding is replaced with.
pub fn placeholder(t: PiiType) -> String {
    format!("[{}]", t.name().to_uppercase())
}

fn redact(text: &str, findings: &[&Finding]) -> String {
    let mut sorted: Vec<&&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| f.start);
    let (mut out, mut at) = (String::with_capacity(text.len()), 0);
    for f in sorted {
        if f.start < at || f.end > text.len() || !text.is_char_boundary(f.start) || !text.is_char_boundary(f.end) {
            continue;
        }
        out.push_str(&text[at..f.start]);
        out.push_str(&placeholder(f.kind));
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Type names for headers and logs, e.g. `email,phone`.
pub fn names(types: &[PiiType]) -> String {
    types.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(action: &str) -> PiiPolicy {
        let yaml = format!("action: {action}\nmodels:\n  local: {{ allow: [all] }}\n  cloud: {{ allow: [email] }}\n  mid: {{ allow: [email, phone] }}\n");
        PiiPolicy::new(&serde_yaml_ng::from_str(&yaml).unwrap()).unwrap()
    }

    fn msgs(prompt: &str) -> Messages {
        let ctx = json!({"messages": [
            {"role": "system", "content": "Reply to jane@example.com"},
            {"role": "user", "content": []}
        ], "temperature": 0});
        Messages::parse(&ctx.to_string(), prompt)
    }

    const CARD: &str = "Charge 4111 1111 1111 1111 and call +1 415 555 0100.";
    const COST: fn(&str) -> f64 = |m| match m { "local" => 5.0, "mid" => 2.0, _ => 1.0 };

    #[test]
    fn allowed_types_pass_and_counts_are_reported() {
        let (o, counts) = policy("block").check("cloud", &msgs("What is the weather?"), true, COST);
        assert_eq!(o, Outcome::Allowed);
        assert_eq!(counts, BTreeMap::from([(PiiType::Email, 1)]));
    }

    #[test]
    fn block_names_the_types_the_model_may_not_receive() {
        let (o, _) = policy("block").check("cloud", &msgs(CARD), true, COST);
        assert_eq!(o, Outcome::Block { types: vec![PiiType::CreditCard, PiiType::Phone] });
        let (o, _) = policy("block").check("unlisted", &msgs("hi"), true, COST);
        assert_eq!(o, Outcome::Block { types: vec![PiiType::Email] }, "unlisted models get default_allow (none)");
    }

    #[test]
    fn route_picks_the_cheapest_model_allowed_everything_and_never_swaps_a_named_model() {
        let p = policy("route");
        let (o, _) = p.check("cloud", &msgs("call +1 415 555 0100"), true, COST);
        assert_eq!(o, Outcome::Route { model: "mid".into(), types: vec![PiiType::Phone] });
        let (o, _) = p.check("cloud", &msgs(CARD), true, COST);
        assert_eq!(o, Outcome::Route { model: "local".into(), types: vec![PiiType::CreditCard, PiiType::Phone] });
        let (o, _) = p.check("cloud", &msgs(CARD), false, COST);
        assert!(matches!(o, Outcome::Block { .. }));
    }

    #[test]
    fn redact_replaces_findings_in_every_message_and_keeps_other_parts() {
        let ctx = json!({"messages": [
            {"role": "system", "content": "Reply to jane@example.com"},
            {"role": "user", "content": [{"type": "text", "text": "my card 4111-1111-1111-1111"}]},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}
        ]});
        let m = Messages::parse(&ctx.to_string(), "mail bob@example.org or 4111 1111 1111 1111");
        let (o, counts) = policy("redact").check("cloud", &m, true, COST);
        assert_eq!(counts.get(&PiiType::CreditCard), Some(&2));
        let Outcome::Redact { patch, types } = o else { panic!("{o:?}") };
        assert_eq!(types, vec![PiiType::CreditCard]);
        let msgs = &patch["messages"];
        assert_eq!(msgs[0]["content"], "Reply to jane@example.com", "email is allowed for cloud");
        assert_eq!(msgs[1]["content"][0]["text"], "my card [CREDIT_CARD]");
        assert_eq!(msgs[2]["content"], "noted");
        assert_eq!(msgs[3]["content"][0], json!({"type": "text", "text": "mail bob@example.org or [CREDIT_CARD]"}));
        assert_eq!(msgs[3]["content"][1]["type"], "image_url");
    }

    #[test]
    fn input_text_parts_of_the_last_user_message_are_scanned_and_redacted() {
        // The filter keeps every part but the `text` ones in the context: an `input_text` part
        // reaches the model as well, so its PII counts and is redacted in place.
        let ctx = json!({"messages": [{"role": "user", "content": [{"type": "input_text", "text": "card 4111 1111 1111 1111"}]}]});
        let m = Messages::parse(&ctx.to_string(), "mail bob@example.org");
        let (o, counts) = policy("redact").check("cloud", &m, true, COST);
        assert_eq!(counts.get(&PiiType::CreditCard), Some(&1));
        let Outcome::Redact { patch, types } = o else { panic!("{o:?}") };
        assert_eq!(types, vec![PiiType::CreditCard]);
        assert_eq!(
            patch["messages"][0]["content"],
            json!([{"type": "text", "text": "mail bob@example.org"}, {"type": "input_text", "text": "card [CREDIT_CARD]"}])
        );
        let only_parts = Messages::parse(&ctx.to_string(), "");
        assert!(matches!(policy("block").check("cloud", &only_parts, true, COST).0, Outcome::Block { .. }), "no prompt text, still seen");
    }

    #[test]
    fn a_string_prompt_is_written_back_as_a_string() {
        let ctx = json!({"messages": [{"role": "user", "content": []}]});
        let m = Messages::parse(&ctx.to_string(), "SSN 536-22-1234 please");
        let (o, _) = policy("redact").check("cloud", &m, true, COST);
        let Outcome::Redact { patch, .. } = o else { panic!() };
        assert_eq!(patch, json!({"messages": [{"role": "user", "content": "SSN [US_SSN] please"}]}));
    }

    #[test]
    fn unknown_types_in_config_are_errors() {
        let cfg: PiiPolicyConfig = serde_yaml_ng::from_str("action: block\nmodels: { m: { allow: [emial] } }").unwrap();
        let e = PiiPolicy::new(&cfg).err().unwrap();
        assert!(e.contains("safety.pii.models.m.allow: unknown PII type 'emial'"), "{e}");
    }
}
