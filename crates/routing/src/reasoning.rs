//! Reasoning families: how each model family is told to think (or not), as a JSON merge patch
//! on the request body that the filter applies.

use serde_json::{Value, json};

use crate::config::{ReasoningFamily, ReasoningType};

/// The families every deployment knows; `routing.reasoning_families` may add or override.
pub fn builtin(name: &str) -> Option<ReasoningFamily> {
    let (r#type, parameter) = match name {
        "qwen3" => (ReasoningType::ChatTemplateKwargs, "enable_thinking"),
        "deepseek" => (ReasoningType::ChatTemplateKwargs, "thinking"),
        "gpt-oss" => (ReasoningType::ReasoningEffort, "reasoning_effort"),
        _ => return None,
    };
    Some(ReasoningFamily { r#type, parameter: parameter.into() })
}

/// The body patch that switches reasoning on (with `effort`) or off for a family.
pub fn patch(family: &ReasoningFamily, on: bool, effort: &str) -> Value {
    match family.r#type {
        ReasoningType::ChatTemplateKwargs => json!({ "chat_template_kwargs": { family.parameter.as_str(): on } }),
        // Effort-style models cannot stop reasoning entirely; "low" is the least they do.
        ReasoningType::ReasoningEffort => json!({ family.parameter.as_str(): if on { effort } else { "low" } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_families_write_their_fields() {
        let q = builtin("qwen3").unwrap();
        assert_eq!(patch(&q, true, "high"), json!({"chat_template_kwargs": {"enable_thinking": true}}));
        assert_eq!(patch(&builtin("deepseek").unwrap(), false, "high"), json!({"chat_template_kwargs": {"thinking": false}}));
        let g = builtin("gpt-oss").unwrap();
        assert_eq!(patch(&g, true, "high"), json!({"reasoning_effort": "high"}));
        assert_eq!(patch(&g, false, "high"), json!({"reasoning_effort": "low"}));
        assert!(builtin("llama").is_none());
    }
}
