//! Which requests the cache may answer, and how similar a cached prompt must be: the global
//! threshold, overridden per routing category (stricter for math, say) and per prompt language
//! (measured per language for a multilingual encoder), or switched off for categories whose
//! answers must always be fresh.

use std::collections::BTreeMap;

use crate::config::{CacheCategory, CacheConfig};
use vane_model::language::Language;
use vane_model::{Reading, Unread};

pub struct CachePolicy {
    threshold: f32,
    max_unknown_share: f32,
    categories: BTreeMap<String, CacheCategory>,
    languages: BTreeMap<Language, CacheCategory>,
}

impl CachePolicy {
    pub fn new(config: &CacheConfig) -> CachePolicy {
        CachePolicy { threshold: config.threshold, max_unknown_share: config.max_unknown_share, categories: config.categories.clone(), languages: config.languages.clone() }
    }

    /// Why the semantic tier may not match a prompt read this way (nor store it for matching):
    /// its embedding does not stand for all of it. `None`: it may.
    pub fn unread(&self, reading: &Reading) -> Option<Unread> {
        reading.unread(self.max_unknown_share)
    }

    /// Whether a request's category must be known before the semantic tier.
    pub fn needs_category(&self) -> bool {
        !self.categories.is_empty()
    }

    /// The lowest threshold any request can get: what the index must return candidates down to.
    pub fn floor(&self) -> f32 {
        self.categories.values().chain(self.languages.values()).filter_map(|c| c.threshold).fold(self.threshold, f32::min)
    }

    /// The threshold for a request of this category and language: the stricter of their rules
    /// (each the global threshold when it has none); `None` when either is never cached.
    pub fn threshold(&self, category: Option<&str>, language: Language) -> Option<f32> {
        let rule = |r: Option<&CacheCategory>| match r {
            Some(r) if !r.enabled => None,
            Some(r) => Some(r.threshold.unwrap_or(self.threshold)),
            None => Some(self.threshold),
        };
        let by_category = rule(category.and_then(|c| self.categories.get(c)))?;
        let by_language = rule(self.languages.get(&language))?;
        // Without a rule for either, the global threshold; with one, that rule's, even if looser.
        Some(match (category.is_some_and(|c| self.categories.contains_key(c)), self.languages.contains_key(&language)) {
            (true, true) => by_category.max(by_language),
            (false, true) => by_language,
            _ => by_category,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_tighten_loosen_or_switch_off_the_cache() {
        let config: CacheConfig = serde_yaml_ng::from_str(
            "threshold: 0.93\ncategories:\n  math: { threshold: 0.98 }\n  history: { threshold: 0.9 }\n  news: { enabled: false }\n",
        )
        .unwrap();
        let p = CachePolicy::new(&config);
        let en = Language::En;
        assert!(p.needs_category());
        assert_eq!(p.threshold(Some("math"), en), Some(0.98));
        assert_eq!(p.threshold(Some("history"), en), Some(0.9));
        assert_eq!(p.threshold(Some("news"), en), None);
        assert_eq!(p.threshold(Some("law"), en), Some(0.93));
        assert_eq!(p.threshold(None, en), Some(0.93));
        assert_eq!(p.floor(), 0.9);
        assert!(!CachePolicy::new(&CacheConfig::default()).needs_category());
    }

    #[test]
    fn languages_have_rules_of_their_own_and_the_stricter_rule_applies() {
        let config: CacheConfig = serde_yaml_ng::from_str(
            "threshold: 0.93\ncategories:\n  math: { threshold: 0.98 }\n  history: { threshold: 0.9 }\n  news: { enabled: false }\nlanguages:\n  zh: { threshold: 0.95 }\n  ja: { threshold: 0.85 }\n  ko: { enabled: false }\n",
        )
        .unwrap();
        let p = CachePolicy::new(&config);
        assert_eq!(p.threshold(None, Language::Zh), Some(0.95));
        assert_eq!(p.threshold(Some("law"), Language::Zh), Some(0.95), "a category without a rule");
        assert_eq!(p.threshold(Some("math"), Language::Zh), Some(0.98), "the stricter of the two");
        assert_eq!(p.threshold(Some("history"), Language::Zh), Some(0.95));
        assert_eq!(p.threshold(None, Language::Ja), Some(0.85), "a language's own rule may be looser");
        assert_eq!(p.threshold(Some("news"), Language::Zh), None);
        assert_eq!(p.threshold(None, Language::Ko), None);
        assert_eq!(p.threshold(None, Language::En), Some(0.93));
        assert_eq!(p.floor(), 0.85);
        let err = serde_yaml_ng::from_str::<CacheConfig>("languages:\n  xx: { threshold: 0.9 }\n").unwrap_err().to_string();
        assert!(err.contains("unknown language 'xx'"), "{err}");
    }
}
