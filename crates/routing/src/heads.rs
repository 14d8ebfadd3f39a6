//! The classifier heads a configuration names, read once when the configuration loads and
//! checked against it there (labels, phrase features, dimensions), so that every problem is
//! reported before anything starts.

use std::collections::BTreeSet;
use std::path::Path;

use vane_model::head::Head;

use crate::DEFAULT_CATEGORY;
use crate::config::{RoutingConfig, SafetyConfig};

#[derive(Debug, Clone, Default)]
pub struct Heads {
    /// `routing.head`: its labels are categories.
    pub routing: Option<Head>,
    /// `routing.cost_aware.head`.
    pub cost_aware: Option<Head>,
    /// `safety.jailbreak.head`.
    pub jailbreak: Option<Head>,
}

/// The index of `label` among the head's labels.
pub fn label(head: &Head, label: &str) -> Option<usize> {
    head.labels().iter().position(|l| l == label)
}

impl Heads {
    /// Reads every head the sections name and pushes each problem with its field path: a file
    /// that cannot be read, a head trained over another encoder than `encoder`, a routing head
    /// with phrase features, a label the config relies on that the head lacks, heads of
    /// different dimensions.
    pub fn load(routing: &RoutingConfig, safety: &SafetyConfig, encoder: &str, errors: &mut Vec<String>) -> Heads {
        let mut read = |field: &str, path: &Path, embedding_only: bool| match Head::load(path) {
            Ok(head) if head.meta.refuses(encoder).is_some() => {
                errors.push(format!("{field}: {}: {}", path.display(), head.meta.refuses(encoder).unwrap_or_default()));
                None
            }
            Ok(head) if embedding_only && head.phrases().is_some() => {
                let names = head.phrases().map(|p| p.names()).unwrap_or_default();
                errors.push(format!("{field}: the head also takes phrase features ({names:?}); only safety.jailbreak.head may"));
                None
            }
            Ok(head) => Some(head),
            Err(e) => {
                errors.push(format!("{field}: {e}"));
                None
            }
        };
        let heads = Heads {
            routing: routing.head.as_deref().and_then(|p| read("routing.head", p, true)),
            cost_aware: routing.cost_aware.as_ref().and_then(|c| read("routing.cost_aware.head", &c.head, true)),
            jailbreak: safety.jailbreak.as_ref().and_then(|j| read("safety.jailbreak.head", &j.head, false)),
        };
        for (i, c) in routing.categories.iter().enumerate().filter(|(_, c)| c.examples.is_empty()) {
            if let Some(head) = &heads.routing
                && label(head, &c.name).is_none()
            {
                errors.push(format!("routing.categories[{i}]: '{}' has no examples and is not a label of routing.head (labels: {:?})", c.name, head.labels()));
            }
        }
        if let (Some(c), Some(head)) = (&routing.cost_aware, &heads.cost_aware)
            && label(head, &c.success_label).is_none()
        {
            errors.push(format!("routing.cost_aware.success_label: '{}' is not a label of {} ({:?})", c.success_label, c.head.display(), head.labels()));
        }
        if let (Some(j), Some(head)) = (&safety.jailbreak, &heads.jailbreak)
            && label(head, &j.positive_label).is_none()
        {
            errors.push(format!("safety.jailbreak.positive_label: '{}' is not a label of {} ({:?})", j.positive_label, j.head.display(), head.labels()));
        }
        let named = [("routing.head", &heads.routing), ("routing.cost_aware.head", &heads.cost_aware), ("safety.jailbreak.head", &heads.jailbreak)];
        let present: Vec<(&str, usize)> = named.iter().filter_map(|(f, h)| Some((*f, h.as_ref()?.dim()))).collect();
        if let Some((first, dim)) = present.first() {
            for (field, d) in &present[1..] {
                if d != dim {
                    errors.push(format!("{field}: the head takes {d} dimensions, {first} {dim}: they must be trained over the same encoder"));
                }
            }
        }
        heads
    }

    /// The categories a decision can carry: configured, a routing head label, or the default.
    pub fn categories(&self, routing: &RoutingConfig) -> BTreeSet<String> {
        let labels = self.routing.iter().flat_map(|h| h.labels().iter().cloned());
        routing.categories.iter().map(|c| c.name.clone()).chain(labels).chain([DEFAULT_CATEGORY.to_string()]).collect()
    }

    /// Every head's dimension, to check against the encoder once it is loaded.
    pub fn dims(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        [("routing.head", &self.routing), ("routing.cost_aware.head", &self.cost_aware), ("safety.jailbreak.head", &self.jailbreak)]
            .into_iter()
            .filter_map(|(f, h)| Some((f, h.as_ref()?.dim())))
    }
}
