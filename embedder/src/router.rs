//! The decision engine: from one Route request to cached, block or forward.
//!
//! One embedding of the prompt feeds both the category classifier and the semantic cache.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::debug;
use vane_proto::v1::{CacheControl, Cached, Forward, RouteDecision, RouteRequest, StoreReply, StoreRequest, route_decision::Action};

use crate::batching::{EmbedError, EmbedQueue};
use crate::cache::memory::MemoryCache;
use crate::cache::guard;
use crate::cache::{Fingerprint, Hit, Partition, PromptKey};
use crate::classify::{Classification, Classifier};
use crate::completion;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tickets::{Pending, Tickets};

/// How long an answer may take to arrive in Store after its Route.
const TICKET_TTL: Duration = Duration::from_secs(600);
const MAX_TICKETS: usize = 100_000;

pub struct Router {
    aliases: HashSet<String>,
    default_model: String,
    confidence_floor: f32,
    models: HashMap<String, String>,
    classifier: Classifier,
    embedder: EmbedQueue,
    cache: Option<MemoryCache>,
    tickets: Tickets,
    metrics: Metrics,
}

impl Router {
    /// Embeds every category's examples once, up front.
    pub async fn build(config: &Config, embedder: EmbedQueue, metrics: Metrics) -> Result<Router, EmbedError> {
        let r = &config.routing;
        let mut categories = Vec::new();
        for c in &r.categories {
            let mut vectors = Vec::new();
            for example in &c.examples {
                vectors.push(embedder.embed(example.clone()).await?);
            }
            categories.push((c.name.clone(), vectors));
        }
        let cache = config.cache.enabled.then(|| {
            MemoryCache::new(config.cache.threshold, Duration::from_secs(config.cache.ttl_seconds), config.cache.max_entries)
        });
        Ok(Router {
            aliases: r.aliases.iter().cloned().collect(),
            default_model: r.default_model.clone(),
            confidence_floor: r.confidence_floor,
            models: r.categories.iter().map(|c| (c.name.clone(), c.model.clone())).collect(),
            classifier: Classifier::new(categories),
            embedder,
            cache,
            tickets: Tickets::new(TICKET_TTL, MAX_TICKETS),
            metrics,
        })
    }

    pub async fn route(&self, req: RouteRequest) -> Result<RouteDecision, EmbedError> {
        let started = Instant::now();
        let routed = self.aliases.contains(&req.model);
        let control = CacheControl::try_from(req.cache_control).unwrap_or_default();
        let use_cache = self.cache.is_some() && !req.prompt.is_empty() && control != CacheControl::NoStore;
        if req.prompt.is_empty() || (!routed && !use_cache) {
            let model = if routed { self.default_model.clone() } else { req.model.clone() };
            return Ok(self.decided(forward(model, None, String::new()), started));
        }
        let partition = Partition { tenant: req.tenant, model: req.model.clone() };
        let fingerprint = Fingerprint::of(&req.context);
        let prompt = PromptKey::of(&req.prompt);
        let lookup = if control == CacheControl::Default { self.cache.as_ref() } else { None };
        // Exact tier first: an identical request is answered without running the encoder.
        if let Some(cache) = lookup {
            let hit = cache.lookup_exact(&partition, fingerprint, prompt, Instant::now());
            self.metrics.cache_lookup("exact", hit.is_some());
            if let Some(hit) = hit {
                return Ok(self.cached(hit, started));
            }
        }
        let embedding = self.embedder.embed(req.prompt.clone()).await?;
        if let Some(cache) = lookup {
            // Near-duplicates that ask something else (negation, other numbers, ...) are not hits.
            let accept = |cached: &str| match guard::conflict(cached, &req.prompt) {
                Some(reason) => {
                    self.metrics.guard_rejection(reason);
                    false
                }
                None => true,
            };
            let hit = cache.lookup(&partition, fingerprint, &embedding, Instant::now(), accept);
            self.metrics.cache_lookup("semantic", hit.is_some());
            if let Some(hit) = hit {
                return Ok(self.cached(hit, started));
            }
        }

        let (model, class) = if routed { self.choose(&embedding) } else { (req.model, None) };
        let ticket = if use_cache { self.tickets.issue(Pending { partition, fingerprint, prompt: req.prompt, embedding }, Instant::now()) } else { String::new() };
        Ok(self.decided(forward(model, class, ticket), started))
    }

    /// Category → model, or the default model when the best category is not similar enough.
    fn choose(&self, embedding: &[f32]) -> (String, Option<Classification>) {
        match self.classifier.classify(embedding) {
            Some(c) if c.score >= self.confidence_floor => {
                let model = self.models.get(&c.category).cloned().unwrap_or_else(|| self.default_model.clone());
                (model, Some(c))
            }
            Some(c) => (self.default_model.clone(), Some(Classification { category: "default".into(), score: c.score })),
            None => (self.default_model.clone(), None),
        }
    }

    fn cached(&self, hit: Hit, started: Instant) -> RouteDecision {
        debug!(entry = hit.id, tier = hit.tier.name(), similarity = hit.similarity, "cache hit");
        let cached = Cached { completion: hit.completion, similarity: hit.similarity, entry_id: hit.id.to_string() };
        self.decided(Action::Cached(cached), started)
    }

    fn decided(&self, action: Action, started: Instant) -> RouteDecision {
        let kind = match &action {
            Action::Cached(_) => "cached",
            Action::Block(_) => "block",
            Action::Forward(_) => "forward",
        };
        self.metrics.route(kind, started.elapsed());
        RouteDecision { action: Some(action) }
    }

    /// Caches a complete answer under the ticket its Route handed out.
    pub fn store(&self, req: StoreRequest) -> StoreReply {
        let result = self.try_store(req);
        let entries = self.cache.as_ref().map_or(0, MemoryCache::len);
        let label = result.as_ref().map_or_else(|why| *why, |_| "stored");
        self.metrics.cache_store(label, entries);
        match result {
            Ok(()) => StoreReply { stored: true, reason: String::new() },
            Err(why) => StoreReply { stored: false, reason: why.into() },
        }
    }

    fn try_store(&self, req: StoreRequest) -> Result<(), &'static str> {
        let cache = self.cache.as_ref().ok_or("cache_disabled")?;
        let pending = self.tickets.redeem(&req.ticket, Instant::now()).ok_or("unknown_ticket")?;
        let body = if req.sse { completion::from_sse(&req.response) } else { completion::from_json(&req.response) };
        let body = body.map_err(|e| e.label())?;
        cache.insert(pending.partition, pending.fingerprint, pending.prompt, pending.embedding, body, Instant::now());
        Ok(())
    }
}

fn forward(model: String, class: Option<Classification>, ticket: String) -> Action {
    let (category, confidence) = class.map_or((String::new(), 0.0), |c| (c.category, c.score));
    Action::Forward(Forward { model, category, confidence, ticket })
}
