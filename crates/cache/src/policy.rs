//! Which requests the cache may answer, and how similar a cached prompt must be: the global
//! threshold, overridden per routing category (stricter for math, say) or switched off for
//! categories whose answers must always be fresh.

use std::collections::BTreeMap;

use crate::config::{CacheCategory, CacheConfig};
use vane_model::{Reading, Unread};

pub struct CachePolicy {
    threshold: f32,
    max_unknown_share: f32,
    categories: BTreeMap<String, CacheCategory>,
}

impl CachePolicy {
    pub fn new(config: &CacheConfig) -> CachePolicy {
        CachePolicy { threshold: config.threshold, max_unknown_share: config.max_unknown_share, categories: config.categories.clone() }
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
        self.categories.values().filter_map(|c| c.threshold).fold(self.threshold, f32::min)
    }

    /// The threshold for a request of this category; `None` when it is never cached.
    pub fn threshold(&self, category: Option<&str>) -> Option<f32> {
        match category.and_then(|c| self.categories.get(c)) {
            Some(c) if !c.enabled => None,
            Some(c) => Some(c.threshold.unwrap_or(self.threshold)),
            None => Some(self.threshold),
        }
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
        assert!(p.needs_category());
        assert_eq!(p.threshold(Some("math")), Some(0.98));
        assert_eq!(p.threshold(Some("history")), Some(0.9));
        assert_eq!(p.threshold(Some("news")), None);
        assert_eq!(p.threshold(Some("law")), Some(0.93));
        assert_eq!(p.threshold(None), Some(0.93));
        assert_eq!(p.floor(), 0.9);
        assert!(!CachePolicy::new(&CacheConfig::default()).needs_category());
    }
}
