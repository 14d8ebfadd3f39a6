//! The per-request pipeline behind the gRPC service. Route: the jailbreak budget, the exact
//! cache tier, then one encoder pass that feeds the semantic tier, the jailbreak verdict and the
//! routing decision ([`vane_routing::Decider`]), then the PII policy. Store caches a complete
//! answer under the ticket Route sealed ([`crate::tickets`]), on whichever replica it reaches.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{Instrument, Span, debug, debug_span, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use vane_proto::v1::{Block, CacheControl, Cached, Forward, RouteDecision, RouteRequest, StoreReply, StoreRequest, route_decision::Action};

use vane_cache::backend::CacheBackend;
use vane_cache::guard;
use vane_cache::memory::MemoryCache;
use vane_cache::policy::CachePolicy;
use vane_cache::snapshot::SnapshotError;
use vane_cache::{CacheError, Fingerprint, Hit, Partition, PromptKey, Selector};
use vane_model::Reading;
use vane_model::language::{self, Language};
use vane_model::batching::{EmbedError, EmbedQueue, Embedded};
use vane_routing::conversation::{self, State};
use vane_routing::jailbreak::{Jailbreak, Outcome, Plan};
use vane_routing::pii_policy::{self, Messages, PiiPolicy};
use vane_routing::{DEFAULT_CATEGORY, Decider, Decision, RoutingError, earlier_user_turns};

use crate::completion::{self, StorePolicy};
use crate::config::{Config, ServerConfig};
use crate::metrics::Metrics;
use crate::telemetry::spans;
use crate::tickets::{Pending, Refused, Sealer, TicketKey};

/// Why a Store did not cache the answer: the reply's `reason` and the
/// `vane_cache_stores_total{result}` label.
#[derive(Debug, thiserror::Error)]
pub enum NotStored {
    #[error("the cache is disabled")]
    CacheDisabled,
    /// Not sealed by a sidecar with this key, or expired.
    #[error(transparent)]
    Ticket(#[from] Refused),
    /// Not a complete successful answer ([`completion`] says what is).
    #[error("not cacheable: {0}")]
    Answer(#[from] completion::NotCacheable),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl NotStored {
    pub fn reason(&self) -> &'static str {
        match self {
            NotStored::CacheDisabled => "cache_disabled",
            NotStored::Ticket(e) => e.label(),
            NotStored::Answer(e) => e.label(),
            NotStored::Cache(e) => e.reason(),
        }
    }
}

/// What a configuration reload replaces: routing, safety, the cache's policy (what it answers
/// and what it stores), and the cache epoch they determine. A call takes the current one once and keeps it to its end, so a request
/// in flight during a reload finishes on the policy it started with.
pub struct Policy {
    pub decider: Decider,
    pii: Option<PiiPolicy>,
    jailbreak: Option<Jailbreak>,
    pub cache_policy: CachePolicy,
    /// Which answers Store caches (`cache.store`, `server.max_store_bytes`).
    pub store_policy: StorePolicy,
    /// Part of every cache key: see [`crate::config::cache_epoch`].
    pub cache_epoch: String,
}

impl Policy {
    /// `config` as [`Config::load`] checked it (with its heads read).
    async fn build(config: &Config, embedder: &EmbedQueue) -> Result<Policy, RoutingError> {
        let decider = Decider::build(&config.routing, &config.heads, embedder).await?;
        let pii = config.safety.pii.as_ref().map(PiiPolicy::new).transpose().map_err(RoutingError::Pii)?;
        let jailbreak = match (&config.safety.jailbreak, &config.heads.jailbreak) {
            (Some(c), Some(head)) => Some(Jailbreak::new(c, head.clone(), embedder.dim())?),
            (Some(_), None) => return Err(RoutingError::NotRead { field: "safety.jailbreak.head" }),
            (None, _) => None,
        };
        let store_policy = StorePolicy::new(&config.cache.store, config.server.max_store_bytes);
        Ok(Policy { decider, pii, jailbreak, cache_policy: CachePolicy::new(&config.cache), store_policy, cache_epoch: config.cache_epoch.clone() })
    }
}

pub struct Pipeline {
    /// Replaced whole by [`Pipeline::reload`]; read once per call.
    policy: RwLock<Arc<Policy>>,
    embedder: EmbedQueue,
    cache: Option<CacheBackend>,
    /// Where the embedded cache is saved and restored (`cache.snapshot`).
    snapshot: Option<PathBuf>,
    tickets: Sealer,
    /// `cache.max_entry_bytes`: a prompt over it gets no ticket (it could never be stored).
    max_entry_bytes: usize,
    /// The per-call caps (`server.max_route_bytes`, `server.max_store_bytes`).
    limits: ServerConfig,
    metrics: Metrics,
    /// `tracing.record_text`: prompts and answers on the spans (debugging only).
    record_text: bool,
}

impl Pipeline {
    /// `config` as [`Config::load`] checked it (with its heads read).
    pub async fn build(config: &Config, embedder: EmbedQueue, metrics: Metrics) -> Result<Pipeline, RoutingError> {
        let policy = Policy::build(config, &embedder).await?;
        // The backend returns candidates down to the loosest category's threshold; each
        // request's own threshold is applied to the hit.
        let c = &config.cache;
        let cache = c.enabled.then(|| CacheBackend::build(c, policy.cache_policy.floor(), embedder.dim(), &metrics.cache));
        if let Some(CacheBackend::Milvus(milvus)) = &cache {
            milvus.warm_up().await;
        }
        // Restored entries keep the epoch they were written under: after a relevant config
        // change they never match, and leave by TTL or eviction.
        let snapshot = if c.enabled { c.snapshot.clone() } else { None };
        if let (Some(CacheBackend::Memory(cache)), Some(path)) = (&cache, &snapshot) {
            restore(cache, path, embedder.dim());
        }
        let key = config.ticket_key.clone().unwrap_or_else(|| {
            if c.enabled {
                info!("tickets are sealed with a key of this process: with more than one replica, set cache.tickets.key_file");
            }
            TicketKey::random()
        });
        let tickets = Sealer::new(key, Duration::from_secs(c.tickets.ttl_seconds));
        Ok(Pipeline { policy: RwLock::new(Arc::new(policy)), embedder, cache, snapshot, tickets, max_entry_bytes: c.max_entry_bytes, limits: config.server.clone(), metrics, record_text: config.tracing.record_text })
    }

    /// The policy calls use now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Builds the policy of `config` (the parts of it that apply live: see [`crate::reload`])
    /// and swaps it in; on an error the current one stays. Conversations are kept.
    pub async fn reload(&self, config: &Config) -> Result<(), RoutingError> {
        let mut policy = Policy::build(config, &self.embedder).await?;
        policy.decider.keep_conversations(&self.policy().decider);
        if let Some(cache) = &self.cache {
            cache.set_threshold(policy.cache_policy.floor());
        }
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        Ok(())
    }

    /// The cache's contents and settings (`None` when disabled), for the admin API; the contents
    /// only where the backend knows them cheaply (the embedded one).
    pub async fn cache_stats(&self) -> Option<Result<serde_json::Value, CacheError>> {
        let cache = self.cache.as_ref()?;
        let mut about = serde_json::json!({"backend": cache.name(), "epoch": self.policy().cache_epoch});
        Some(cache.stats().await.map(|stats| {
            if let (Some(about), serde_json::Value::Object(stats)) = (about.as_object_mut(), stats) {
                about.extend(stats);
            }
            about
        }))
    }

    /// Removes the entries the selector matches (`None` when the cache is disabled).
    pub async fn invalidate(&self, selector: &Selector) -> Option<Result<usize, CacheError>> {
        let cache = self.cache.as_ref()?;
        let removed = cache.invalidate(selector).await;
        if let Ok(n) = removed {
            self.metrics.cache.invalidated(n, cache.entries());
            info!(removed = n, by = ?selector_fields(selector), "cache invalidated");
        }
        Some(removed)
    }

    /// Writes the cache to `cache.snapshot`, if configured; a failure is logged, never fatal.
    pub fn save_cache(&self) {
        let (Some(CacheBackend::Memory(cache)), Some(path)) = (&self.cache, &self.snapshot) else { return };
        let started = Instant::now();
        match cache.save(path, self.embedder.dim(), Instant::now()) {
            Ok(entries) => info!(path = %path.display(), entries, took_ms = started.elapsed().as_millis() as u64, "cache snapshot written"),
            Err(e) => warn!(path = %path.display(), error = %e, "cache snapshot not written"),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn rpc_limits(&self) -> &ServerConfig {
        &self.limits
    }

    /// The most one gRPC message may carry: a Route, or a Store with its answer and its ticket.
    pub fn max_message_bytes(&self) -> usize {
        self.limits.max_message_bytes(self.max_entry_bytes)
    }

    /// The ticket for an answer that may be stored; empty when the prompt could never be.
    fn ticket(&self, pending: Pending) -> Vec<u8> {
        if pending.bytes() > self.max_entry_bytes {
            self.metrics.ticket_dropped("too_large");
            return Vec::new();
        }
        self.tickets.seal(&pending, SystemTime::now())
    }

    pub fn embedder(&self) -> &EmbedQueue {
        &self.embedder
    }

    /// Decides one request, in the caller's `Route` span (see [`crate::telemetry`] for the
    /// children and attributes).
    pub async fn route(&self, req: RouteRequest) -> Result<RouteDecision, EmbedError> {
        let started = Instant::now();
        let policy = self.policy();
        let p = &*policy;
        let routed = p.decider.is_alias(&req.model);
        let span = Span::current();
        span.set_attribute("gen_ai.operation.name", "chat");
        span.set_attribute("gen_ai.request.model", req.model.clone());
        span.set_attribute("vane.stream", req.stream);
        if self.record_text {
            span.set_attribute("vane.prompt", req.prompt.clone());
        }
        let control = CacheControl::try_from(req.cache_control).unwrap_or_default();
        let use_cache = self.cache.is_some() && !req.prompt.is_empty() && control != CacheControl::NoStore;
        // Read before the request is taken apart; only when a PII policy is configured.
        let messages = p.pii.as_ref().map(|_| Messages::parse(&req.context, &req.prompt));
        let request_id = req.request_id.clone();
        let forward = |fwd: Forward| self.decided(self.apply_pii(p, fwd, messages.as_ref(), routed, &request_id), started);
        // Every client text is judged, within a budget; over it, `oversize: block` refuses here.
        let plan = p.jailbreak.as_ref().map(|j| j.plan(&req.prompt, &req.context));
        if let (Some(j), Some(plan)) = (&p.jailbreak, &plan)
            && let Some(block) = j.refusal(plan)
        {
            let signal = debug_span!("signal.jailbreak");
            signal.set_attribute("vane.jailbreak.action", "oversize_block");
            signal.set_attribute("vane.jailbreak.windows", plan.needed() as i64);
            drop(signal);
            self.metrics.safety("jailbreak", "oversize_block");
            info!(request_id, signal = "jailbreak", action = "block", reason = "over_budget", windows = plan.needed(), "jailbreak policy");
            return Ok(self.decided(Action::Block(block), started));
        }
        if req.prompt.is_empty() || (!routed && !use_cache && p.jailbreak.is_none()) {
            // No prompt text, but the context may hold some (earlier turns, `input_text` parts).
            let jailbreak = match &plan {
                Some(plan) => match self.check_jailbreak(p, plan, None, None, &request_id).await? {
                    Ok(flagged) => flagged,
                    Err(block) => return Ok(self.decided(Action::Block(block), started)),
                },
                None => None,
            };
            let model = if routed { p.decider.default_model().to_string() } else { req.model.clone() };
            return Ok(forward(Forward { model, jailbreak, ..Forward::default() }));
        }
        let turns = if routed { earlier_user_turns(&req.context) } else { Vec::new() };
        let partition = Partition { tenant: req.tenant, model: req.model.clone() };
        // Answers are in the language of their question: a multilingual encoder puts "天空为什么是
        // 蓝色的" next to "why is the sky blue", but an English answer is no answer to it. Latin
        // text of no known language counts as English (mostly code and formulas), here and for
        // `cache.languages`.
        let language = match language::detect(&req.prompt).language {
            Language::Und => Language::En,
            l => l,
        };
        let fingerprint = Fingerprint::within(&format!("{}/{language}", p.cache_epoch), &req.context);
        let prompt = PromptKey::of(&req.prompt);
        let lookup = if control == CacheControl::Default { self.cache.as_ref() } else { None };
        // Exact tier first: an identical request is answered without running the encoder. This
        // stays sound with jailbreak detection on: blocked and flagged prompts are never stored.
        if let Some(cache) = lookup {
            let t0 = Instant::now();
            let step = debug_span!("cache.exact");
            let hit = cache.lookup_exact(&partition, fingerprint, prompt, t0).instrument(step.clone()).await;
            step.set_attribute("vane.cache.backend", cache.name());
            step.set_attribute("vane.cache.hit", hit.is_some());
            drop(step);
            self.metrics.cache.lookup(cache.name(), "exact", if hit.is_some() { "hit" } else { "miss" }, t0.elapsed());
            if let Some(hit) = hit {
                return Ok(self.cached(hit, started));
            }
        }
        let embedded = match (&p.jailbreak, &plan) {
            (Some(j), Some(plan)) if j.late(plan).is_some() => match tokio::time::timeout_at(j.due(plan), self.embed(req.prompt.clone())).await {
                Ok(embedded) => embedded?,
                Err(_) => {
                    span.set_attribute("vane.jailbreak.action", "unjudged_block");
                    self.metrics.safety("jailbreak", "unjudged_block");
                    info!(request_id, signal = "jailbreak", action = "unjudged_block", reason = "no_time", "jailbreak policy");
                    return Ok(self.decided(Action::Block(j.late(plan).unwrap_or_default()), started));
                }
            },
            _ => self.embed(req.prompt.clone()).await?,
        };
        let embedding = embedded.vector;
        // An embedding that does not stand for the whole prompt never matches, nor is matched:
        // prompts differing only where the encoder could not read them embed alike.
        let unread = p.cache_policy.unread(&embedded.reading);
        let unreadable = !p.decider.can_read(&embedded.reading);

        // Per-category policies (jailbreak overrides, cache rules) need the request's category:
        // the routing decision's for a routed request (made now, once, and reused below), else
        // the prompt's own.
        let needs_category = p.jailbreak.as_ref().is_some_and(Jailbreak::has_overrides) || (self.cache.is_some() && p.cache_policy.needs_category());
        let mut routed_decision = None;
        let category = match (needs_category, routed) {
            (false, _) => None,
            (true, true) => {
                let r = self.classify(p, &partition, &turns, &req.prompt, &embedding, &embedded.reading).await?;
                let category = r.decision.category.clone();
                routed_decision = Some(r);
                Some(category)
            }
            (true, false) if unreadable => Some(DEFAULT_CATEGORY.to_string()),
            (true, false) => Some(p.decider.decide(&embedding, None).category),
        };
        let category = category.as_deref();

        // Jailbreak verdict before anything is served.
        let flagged = match &plan {
            Some(plan) => match self.check_jailbreak(p, plan, Some(embedding.as_slice()), category, &request_id).await? {
                Ok(flagged) => flagged,
                Err(block) => return Ok(self.decided(Action::Block(block), started)),
            },
            None => None,
        };
        // A flagged request is neither answered from the cache (the flag would be lost) nor stored;
        // nor is a request of a category that is never cached.
        let threshold = p.cache_policy.threshold(category, language);
        let (lookup, use_cache) = if flagged.is_some() || threshold.is_none() { (None, false) } else { (lookup, use_cache) };
        let threshold = threshold.unwrap_or(1.0);

        if let (Some(cache), Some(why)) = (lookup, unread) {
            span.set_attribute("vane.cache.semantic_skipped", why.name());
            self.metrics.cache.lookup(cache.name(), "semantic", why.name(), Duration::ZERO);
            debug!(request_id, reason = why.name(), share = embedded.reading.unknown_share(), "semantic tier skipped");
        }
        if let Some(cache) = lookup.filter(|_| unread.is_none()) {
            // Near-duplicates that ask something else (negation, other numbers, ...) are not hits.
            let (mut candidates, mut rejected) = (0_i64, Vec::new());
            let accept = |cached: &str| {
                candidates += 1;
                match guard::conflict(cached, &req.prompt) {
                    Some(reason) => {
                        self.metrics.cache.guard_rejection(reason);
                        rejected.push(reason);
                        false
                    }
                    None => true,
                }
            };
            let t0 = Instant::now();
            let step = debug_span!("cache.semantic");
            let found = cache.lookup(&partition, fingerprint, &embedding, t0, accept).instrument(step.clone()).await;
            step.set_attribute("vane.cache.backend", cache.name());
            step.set_attribute("vane.cache.threshold", f64::from(threshold));
            step.set_attribute("vane.cache.candidates", candidates);
            step.set_attribute("vane.cache.guard_rejections", rejected.len() as i64);
            if !rejected.is_empty() {
                step.set_attribute("vane.cache.guard_reasons", rejected.join(","));
            }
            if let Some(h) = &found {
                step.set_attribute("vane.cache.similarity", f64::from(h.similarity));
            }
            let hit = found.filter(|h| h.similarity >= threshold);
            step.set_attribute("vane.cache.hit", hit.is_some());
            drop(step);
            self.metrics.cache.lookup(cache.name(), "semantic", if hit.is_some() { "hit" } else { "miss" }, t0.elapsed());
            if let Some(hit) = hit {
                return Ok(self.cached(hit, started));
            }
        }

        // Stored for the exact tier only (no semantic key) when its embedding does not stand for
        // the prompt.
        if !routed {
            let ticket = if use_cache { self.ticket(Pending { partition, fingerprint, prompt: req.prompt, embedding: unread.is_none().then_some(embedding) }) } else { Vec::new() };
            return Ok(forward(Forward { model: req.model, ticket, jailbreak: flagged, ..Forward::default() }));
        }
        let routed = match routed_decision {
            Some(r) => r,
            None => self.classify(p, &partition, &turns, &req.prompt, &embedding, &embedded.reading).await?,
        };
        let remembered = p.decider.conversations.put(routed.conversation, routed.state, Instant::now());
        self.metrics.conversations(remembered);
        let decision = routed.decision;
        debug!(model = %decision.model, category = %decision.category, confidence = decision.confidence, kept = ?decision.kept_from_conversation, "routed");

        let ticket = if use_cache { self.ticket(Pending { partition, fingerprint, prompt: req.prompt, embedding: unread.is_none().then_some(embedding) }) } else { Vec::new() };
        Ok(forward(Forward { jailbreak: flagged, ..forward_of(decision, ticket) }))
    }

    /// Routes a prompt with its conversation (multi-turn: earlier user turns blended in, and the
    /// model the conversation is on); the conversation's new state is remembered on forward. An
    /// unreadable prompt goes to the default model ([`Decider::decide_unreadable`]).
    async fn classify(&self, p: &Policy, partition: &Partition, turns: &[String], prompt: &str, embedding: &[f32], reading: &Reading) -> Result<Routed, EmbedError> {
        let span = debug_span!("decision");
        let routed = self.classify_in(p, partition, turns, prompt, embedding, reading).instrument(span.clone()).await?;
        let d = &routed.decision;
        span.set_attribute("vane.category", d.category.clone());
        span.set_attribute("vane.confidence", f64::from(d.confidence));
        span.set_attribute("vane.category.source", d.source);
        span.set_attribute("vane.language", d.language);
        if let Some(from) = &d.moved_for_language {
            span.set_attribute("vane.language.moved_from", from.clone());
        }
        span.set_attribute("vane.model", d.model.clone());
        span.set_attribute("vane.conversation.turns", turns.len() as i64);
        if let Some(p) = d.small_model_success {
            span.set_attribute("vane.small_model_success", f64::from(p));
        }
        Ok(routed)
    }

    async fn classify_in(&self, p: &Policy, partition: &Partition, turns: &[String], prompt: &str, embedding: &[f32], reading: &Reading) -> Result<Routed, EmbedError> {
        let key = |last: Option<&str>| conversation::key(&partition.tenant, &partition.model, turns.iter().map(String::as_str).chain(last));
        let previous = match turns.is_empty() {
            true => None,
            false => match p.decider.conversations.get(&key(None), Instant::now()) {
                Some(state) => Some(state),
                None => self.replay(p, turns).await?,
            },
        };
        let (decision, state) = turn(p, previous.as_ref(), embedding, reading);
        Ok(Routed { decision, conversation: key(Some(prompt)), state })
    }

    /// The state of a conversation this replica does not remember (another replica routed its
    /// earlier turns, or it was forgotten), rebuilt from the request: its recent earlier user
    /// turns routed again in order, as they were when they came. Every replica rebuilds the same
    /// state from the same request, and the one that remembers it holds that state too, as long
    /// as the conversation is no longer than [`REPLAYED_TURNS`] earlier turns.
    async fn replay(&self, p: &Policy, turns: &[String]) -> Result<Option<State>, EmbedError> {
        let recent = &turns[turns.len().saturating_sub(REPLAYED_TURNS)..];
        // Embedded concurrently, so the encoder batches them.
        let calls: Vec<_> = recent.iter().map(|t| {
            let (queue, text) = (self.embedder.clone(), t.clone());
            tokio::spawn(async move { queue.embed(text).await })
        }).collect();
        let mut state = None;
        for call in calls {
            let e = call.await.map_err(|_| EmbedError::Stopped)??;
            state = Some(turn(p, state.as_ref(), &e.vector, &e.reading).1);
        }
        Ok(state)
    }

    /// The jailbreak policy's view of a text (for /v1/classify): its score and the action.
    pub async fn jailbreak_opinion(&self, p: &Policy, text: &str, embedding: &[f32], category: Option<&str>) -> Result<Option<(f32, &'static str)>, EmbedError> {
        let Some(jailbreak) = &p.jailbreak else { return Ok(None) };
        let plan = jailbreak.plan(text, "");
        let judged = jailbreak.judge(&self.embedder, &plan, Some(embedding), jailbreak.due(&plan)).await?;
        Ok(Some((judged.score, jailbreak.decide(&judged, category).0.action())))
    }

    /// Judges a request's client text ([`Jailbreak::judge`], windows due `deadline_ms` after
    /// the plan was made, at the start of the Route): `Ok(flag score)` to go on, `Err(block)`.
    async fn check_jailbreak(&self, p: &Policy, plan: &Plan, shared: Option<&[f32]>, category: Option<&str>, request_id: &str) -> Result<Result<Option<f32>, Block>, EmbedError> {
        let Some(jailbreak) = &p.jailbreak else { return Ok(Ok(None)) };
        let signal = debug_span!("signal.jailbreak");
        let judged = jailbreak.judge(&self.embedder, plan, shared, jailbreak.due(plan)).instrument(signal.clone()).await?;
        let (outcome, label) = jailbreak.decide(&judged, category);
        signal.set_attribute("vane.jailbreak.action", label);
        signal.set_attribute("vane.jailbreak.score", f64::from(judged.score));
        signal.set_attribute("vane.jailbreak.windows", judged.needed as i64);
        signal.set_attribute("vane.jailbreak.judged", judged.judged as i64);
        if let Some(why) = judged.unjudged {
            signal.set_attribute("vane.jailbreak.unjudged", why.name());
        }
        let _in_signal = signal.enter();
        if label != "allow" {
            self.metrics.safety("jailbreak", label);
            let reason = judged.unjudged.map(|u| u.name());
            info!(request_id, signal = "jailbreak", action = label, score = judged.score, windows = judged.needed, judged = judged.judged, reason, category = ?category, "jailbreak policy");
        }
        Ok(match outcome {
            Outcome::Allow => Ok(None),
            Outcome::Flag(score) => Ok(Some(score)),
            Outcome::Block(block) => Err(block),
        })
    }

    /// Holds a forward to the PII policy: the model may not receive some PII → block, another
    /// model, or the body with the PII replaced. Logs and metrics carry types and counts only.
    fn apply_pii(&self, p: &Policy, mut fwd: Forward, messages: Option<&Messages>, routed: bool, request_id: &str) -> Action {
        let (Some(policy), Some(messages)) = (&p.pii, messages) else { return Action::Forward(fwd) };
        let signal = debug_span!("signal.pii");
        let _in_signal = signal.enter();
        let (outcome, counts) = policy.check(&fwd.model, messages, routed, |m| p.decider.cost(m));
        for (kind, n) in &counts {
            self.metrics.pii_found(kind.name(), *n);
        }
        let (action, types) = match &outcome {
            pii_policy::Outcome::Allowed => ("allow", Vec::new()),
            pii_policy::Outcome::Block { types } => ("block", types.clone()),
            pii_policy::Outcome::Route { types, .. } => ("route", types.clone()),
            pii_policy::Outcome::Redact { types, .. } => ("redact", types.clone()),
        };
        signal.set_attribute("vane.pii.action", if counts.is_empty() { "none" } else { action });
        if counts.is_empty() {
            return Action::Forward(fwd);
        }
        self.metrics.safety("pii", action);
        let found: Vec<String> = counts.iter().map(|(k, n)| format!("{}={n}", k.name())).collect();
        signal.set_attribute("vane.pii.found", found.join(","));
        info!(request_id, signal = "pii", action, model = %fwd.model, found = %found.join(","), "pii policy");
        let names = pii_policy::names(&types);
        match outcome {
            pii_policy::Outcome::Allowed => Action::Forward(fwd),
            // Nothing reaches the model; the ticket goes with the forward.
            pii_policy::Outcome::Block { .. } => Action::Block(Block {
                status: 403,
                r#type: "invalid_request_error".into(),
                code: "pii_not_allowed".into(),
                message: format!("This request contains personal data ({names}) that model '{}' may not receive.", fwd.model),
            }),
            pii_policy::Outcome::Route { model, .. } => {
                let (reasoning, patch) = p.decider.reasoning_for(&model, fwd.reasoning.unwrap_or(false));
                fwd.model = model;
                fwd.reasoning = reasoning;
                fwd.body_patch = patch.map(|p| p.to_string()).unwrap_or_default();
                fwd.pii = format!("route:{names}");
                Action::Forward(fwd)
            }
            pii_policy::Outcome::Redact { patch, .. } => {
                let mut merged = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&fwd.body_patch).unwrap_or_default();
                if let serde_json::Value::Object(p) = patch {
                    merged.extend(p);
                }
                fwd.body_patch = serde_json::Value::Object(merged).to_string();
                fwd.pii = format!("redact:{names}");
                Action::Forward(fwd)
            }
        }
    }

    fn cached(&self, hit: Hit, started: Instant) -> RouteDecision {
        debug!(entry = hit.id, tier = hit.tier.name(), similarity = hit.similarity, "cache hit");
        let span = Span::current();
        span.set_attribute("vane.cache.tier", hit.tier.name());
        span.set_attribute("vane.cache.similarity", f64::from(hit.similarity));
        span.set_attribute("vane.cache.entry", hit.id.to_string());
        let cached = Cached { completion: hit.completion, similarity: hit.similarity, entry_id: hit.id.to_string() };
        self.decided(Action::Cached(cached), started)
    }

    fn decided(&self, mut action: Action, started: Instant) -> RouteDecision {
        let span = Span::current();
        let kind = match &mut action {
            Action::Cached(_) => "cached",
            Action::Block(block) => {
                span.set_attribute("vane.block.code", block.code.clone());
                "block"
            }
            Action::Forward(fwd) => {
                forward_attributes(&span, fwd);
                // The filter hands this to the model server when it started the trace itself.
                fwd.traceparent = spans::traceparent(&span);
                "forward"
            }
        };
        span.set_attribute("vane.decision", kind);
        self.metrics.route(kind, started.elapsed());
        RouteDecision { action: Some(action) }
    }

    /// One text through the prompt lane, in an `encode` span with the pass's queue wait and
    /// run under it.
    async fn embed(&self, text: String) -> Result<Embedded, EmbedError> {
        let span = debug_span!("encode");
        let queued = Instant::now();
        let embedded = self.embedder.embed(text).instrument(span.clone()).await?;
        spans::encoder_pass(&span, queued, &embedded.pass);
        Ok(embedded)
    }

    /// Caches a complete answer under the ticket its Route handed out, if
    /// [`StorePolicy::check`] finds it may be cached.
    pub async fn store(&self, req: StoreRequest) -> StoreReply {
        let result = self.try_store(req).await;
        let entries = self.cache.as_ref().map_or(Some(0), CacheBackend::entries);
        let label = result.as_ref().map_or_else(NotStored::reason, |_| "stored");
        Span::current().set_attribute("vane.store.result", label);
        self.metrics.cache.store(label, entries);
        match result {
            Ok(()) => StoreReply { stored: true, reason: String::new() },
            Err(why) => {
                debug!(result = label, why = %why, "answer not stored");
                StoreReply { stored: false, reason: why.reason().into() }
            }
        }
    }

    async fn try_store(&self, req: StoreRequest) -> Result<(), NotStored> {
        let cache = self.cache.as_ref().ok_or(NotStored::CacheDisabled)?;
        let pending = self.tickets.open(&req.ticket, SystemTime::now())?;
        let body = self.policy().store_policy.check((&req).into())?;
        let span = Span::current();
        if spans::recorded(&span) {
            completion_attributes(&span, &body, self.record_text);
        }
        Ok(cache.insert(pending.partition, pending.fingerprint, pending.prompt, pending.embedding, body, Instant::now()).await?)
    }
}

/// The most earlier turns [`Pipeline::replay`] routes again (an encoder pass each).
const REPLAYED_TURNS: usize = 4;

/// One turn of a conversation: its decision, and the conversation's state after it (the model
/// it is on, and the topic so far with this turn added).
fn turn(p: &Policy, previous: Option<&State>, embedding: &[f32], reading: &Reading) -> (Decision, State) {
    let topic = previous.map(|s| s.topic.as_slice());
    let classified = topic.map_or_else(|| embedding.to_vec(), |t| conversation::blend(embedding, t, p.decider.multi_turn.history_weight));
    let decision = match p.decider.can_read(reading) {
        true => p.decider.decide(&classified, previous),
        false => p.decider.decide_unreadable(previous),
    };
    let decision = p.decider.in_language(decision, reading.language);
    let topic = topic.map_or_else(|| embedding.to_vec(), |t| conversation::blend(embedding, t, 1.0));
    let state = State { model: decision.model.clone(), topic };
    (decision, state)
}

/// A routing decision, and what its conversation should remember once the request is forwarded.
struct Routed {
    decision: Decision,
    conversation: [u8; 32],
    state: State,
}

/// Which fields an invalidation used (never their values: prompts and tenants stay out of logs).
fn selector_fields(s: &Selector) -> Vec<&'static str> {
    [("id", s.id.is_some()), ("tenant", s.tenant.is_some()), ("model", s.model.is_some()), ("prompt", s.prompt.is_some())]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
}

/// Loads a snapshot into the (empty) cache; a missing, corrupt or mismatched one leaves it empty.
fn restore(cache: &MemoryCache, path: &std::path::Path, dim: usize) {
    let started = Instant::now();
    match cache.load(path, dim, Instant::now()) {
        Ok(entries) => info!(path = %path.display(), entries, took_ms = started.elapsed().as_millis() as u64, "cache snapshot loaded"),
        Err(SnapshotError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => info!(path = %path.display(), "no cache snapshot yet"),
        Err(e) => warn!(path = %path.display(), error = %e, "cache snapshot ignored, starting empty"),
    }
}

/// The Route span's view of a forward: where it goes and what was found on the way.
fn forward_attributes(span: &Span, fwd: &Forward) {
    span.set_attribute("vane.model", fwd.model.clone());
    if !fwd.category.is_empty() {
        span.set_attribute("vane.category", fwd.category.clone());
        span.set_attribute("vane.confidence", f64::from(fwd.confidence));
    }
    span.set_attribute("vane.cache.ticket", !fwd.ticket.is_empty());
    if let Some(on) = fwd.reasoning {
        span.set_attribute("vane.reasoning", on);
    }
    if !fwd.pii.is_empty() {
        span.set_attribute("vane.pii", fwd.pii.clone());
    }
    if let Some(score) = fwd.jailbreak {
        span.set_attribute("vane.jailbreak.score", f64::from(score));
    }
}

/// The Store span's GenAI attributes: the answering model and its token usage.
fn completion_attributes(span: &Span, body: &[u8], record_text: bool) {
    let c = completion::summary(body);
    span.set_attribute("gen_ai.operation.name", "chat");
    if let Some(model) = c.model {
        span.set_attribute("gen_ai.response.model", model);
    }
    if let Some(n) = c.input_tokens {
        span.set_attribute("gen_ai.usage.input_tokens", n);
    }
    if let Some(n) = c.output_tokens {
        span.set_attribute("gen_ai.usage.output_tokens", n);
    }
    if record_text {
        span.set_attribute("vane.completion", String::from_utf8_lossy(body).into_owned());
    }
}

fn forward_of(d: Decision, ticket: Vec<u8>) -> Forward {
    let body_patch = d.body_patch.map(|p| p.to_string()).unwrap_or_default();
    Forward { model: d.model, category: d.category, confidence: d.confidence, ticket, reasoning: d.reasoning, body_patch, language: d.language.into(), ..Forward::default() }
}

#[cfg(test)]
mod tests;
