//! The Milvus backend: entries in a Milvus collection, so several sidecars share one cache and it
//! survives restarts. Same hit rule as the embedded backend: only entries of the same partition
//! and fingerprint (one `group` hash, filtered on), live (`expires_at`), similarity at or above
//! the threshold, prompt text accepted by the near-duplicate guard.
//!
//! Milvus is never allowed to fail a request: every error is counted
//! (`vane_cache_errors_total{backend="milvus",op}`) and answered as a miss or a skipped store,
//! and the client is rebuilt (with backoff) on the next call, so a restarted Milvus is used again.
//! Nor to slow requests down for long: after a few consecutive failed lookups or stores (errors
//! or timeouts) a [`Breaker`] opens and Milvus is not asked at all (a lookup is a miss at once)
//! until a probe in the background finds it answering again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use milvus::v2::prelude::{
    ClientV2, CollectionSchema, ConnectConfig, ConsistencyLevel, CreateCollectionRequest, CreateIndexRequest, DataType, DeleteRequest, DescribeCollectionRequest, FieldData, FieldSchema, HasCollectionRequest, Ids, IndexParam,
    IndexType,
    InsertRequest, LoadCollectionRequest, MetricType, QueryRequest, RetryConfig, SearchRequest, SearchVectors, UpsertRequest,
};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use tracing::{info, warn};

use crate::breaker::{Breaker, Change};
use crate::config::Consistency;
use crate::metrics::CacheMetrics;
use crate::{CacheError, Fingerprint, Floor, Hit, Partition, PromptKey, Selector, Tier};

/// Milvus VARCHAR limit (bytes): longer prompts or completions are not stored (counted).
pub const MAX_VARCHAR: usize = 65_535;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Creating, indexing and loading the collection takes seconds, far beyond a request's timeout.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Expired ids deleted per Milvus call during cleanup.
const CLEANUP_PAGE: i64 = 5_000;
/// Per RPC outside lookups (the first write to a new segment can take a few hundred ms).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct MilvusSettings {
    pub address: String,
    pub collection: String,
    pub consistency: ConsistencyLevel,
    /// Per lookup: a slow Milvus costs a request at most this much (then it is a miss). Stores and
    /// cleanup are off the request path and get [`WRITE_TIMEOUT`].
    pub timeout: Duration,
    /// Candidates per semantic lookup, for the guard to pick from.
    pub top_k: usize,
    /// HNSW search breadth.
    pub ef: usize,
    pub dim: usize,
}

struct Connection {
    client: Option<Arc<ClientV2>>,
    /// No new connection attempt before this (backoff after failures).
    retry_at: Instant,
    backoff: Duration,
}

/// The SDK's name for a `cache.milvus.consistency`.
pub fn consistency_level(c: Consistency) -> ConsistencyLevel {
    match c {
        Consistency::Strong => ConsistencyLevel::Strong,
        Consistency::Session => ConsistencyLevel::Session,
        Consistency::Bounded => ConsistencyLevel::Bounded,
        Consistency::Eventually => ConsistencyLevel::Eventually,
    }
}

pub struct MilvusCache {
    link: Arc<Link>,
    threshold: Floor,
    ttl: Duration,
    metrics: CacheMetrics,
    last_error: Mutex<Option<String>>,
    /// `cache.max_entry_bytes`: the server owns storage, but what one entry may cost is ours.
    max_entry_bytes: usize,
}

impl MilvusCache {
    /// The collection's vector dimension.
    pub fn dim(&self) -> usize {
        self.link.settings.dim
    }

    /// Does not connect: [`Self::warm_up`] or [`Self::ready`] does, or the first call starts a
    /// background connect (as every call after a failure does, with backoff).
    pub fn new(settings: MilvusSettings, threshold: f32, ttl: Duration, metrics: CacheMetrics) -> MilvusCache {
        let connection = Connection { client: None, retry_at: Instant::now(), backoff: BACKOFF_MIN };
        let link = Arc::new(Link { settings, connection: RwLock::new(connection), reconnecting: Default::default(), breaker: Breaker::default() });
        MilvusCache { link, threshold: Floor::new(threshold), ttl, metrics, last_error: Mutex::new(None), max_entry_bytes: usize::MAX }
    }

    /// Entries estimated ([`crate::entry_bytes`]) over `max` are not stored (`too_large`).
    pub fn with_max_entry_bytes(self, max: usize) -> MilvusCache {
        MilvusCache { max_entry_bytes: max, ..self }
    }

    pub fn settings(&self) -> &MilvusSettings {
        &self.link.settings
    }

    /// Connects now and makes sure the collection exists, is indexed and loaded (startup, tests).
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.client_now().await.map(|_| ())
    }

    /// At startup: connect and prepare the collection, or log why not (requests then miss
    /// until a reconnect succeeds: the sidecar starts without Milvus).
    pub async fn warm_up(&self) {
        match tokio::time::timeout(SETUP_TIMEOUT, self.ready()).await {
            Ok(Ok(())) => {
                // The first search and query of a freshly loaded collection take ~100 ms more
                // than the rest: pay that here, not in a request's timeout.
                let nowhere = Partition { tenant: String::new(), model: String::new() };
                let mut probe = vec![0.0; self.link.settings.dim];
                probe[0] = 1.0;
                let searched = self.try_candidates(&nowhere, Fingerprint::of(""), &probe, Instant::now()).await;
                let queried = self.try_lookup_exact(&nowhere, Fingerprint::of(""), PromptKey::of(""), Instant::now()).await;
                if let Some(e) = searched.err().or(queried.err()) {
                    warn!(error = %format!("{e:#}"), "milvus cache warm-up lookup failed");
                }
            }
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "milvus cache not ready; requests miss until it is"),
            Err(_) => warn!("milvus cache not ready after {SETUP_TIMEOUT:?}; requests miss until it is"),
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live entry for exactly this prompt (its id is the hash of group and prompt key).
    pub async fn lookup_exact(&self, partition: &Partition, fingerprint: Fingerprint, prompt: PromptKey, now: Instant) -> Option<Hit> {
        self.closed("lookup_exact").ok()?;
        let result = self.within_timeout(self.try_lookup_exact(partition, fingerprint, prompt, now)).await;
        self.recorded(self.fail_open("lookup_exact", result)).ok().flatten()
    }

    /// Whether the circuit breaker lets `op` ask Milvus; the call not made is counted.
    fn closed(&self, op: &'static str) -> Result<(), CacheError> {
        if self.link.breaker.allows() {
            return Ok(());
        }
        self.metrics.breaker_skipped("milvus", op);
        Err(CacheError::Backend("milvus circuit breaker open".into()))
    }

    /// Tells the breaker how a lookup or store went; when that opens it, a probe starts.
    fn recorded<T>(&self, result: Result<T, CacheError>) -> Result<T, CacheError> {
        if let Some(change) = self.link.breaker.record(result.is_ok(), Instant::now()) {
            changed(&self.metrics, change, None);
            tokio::spawn(probe_until_closed(Arc::downgrade(&self.link), self.metrics.clone()));
        }
        result
    }

    /// Whether the circuit breaker is open (or half-open): Milvus is not being asked.
    pub fn breaker_open(&self) -> bool {
        self.link.breaker.is_open()
    }

    /// Candidates are returned down to `threshold` from now on (a reloaded cache policy).
    pub fn set_threshold(&self, threshold: f32) {
        self.threshold.set(threshold);
    }

    /// The most similar live entry at or above the threshold whose prompt text `accept`s, among
    /// the `top_k` nearest of its group.
    pub async fn lookup(&self, partition: &Partition, fingerprint: Fingerprint, embedding: &[f32], now: Instant, mut accept: impl FnMut(&str) -> bool) -> Option<Hit> {
        self.closed("lookup").ok()?;
        let result = self.within_timeout(self.try_candidates(partition, fingerprint, embedding, now)).await;
        let candidates = self.recorded(self.fail_open("lookup", result)).ok()?;
        candidates.into_iter().filter(|c| c.hit.similarity >= self.threshold.get()).find(|c| accept(&c.text)).map(|c| c.hit)
    }

    /// Stores an answer; a Milvus error is counted and logged before it is returned.
    pub async fn insert(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Vec<f32>, completion: Vec<u8>, now: Instant) -> Result<(), CacheError> {
        let Ok(completion) = String::from_utf8(completion) else { return Err(CacheError::NotUtf8) };
        let bytes = crate::entry_bytes(&partition, text.len(), completion.len(), embedding.len());
        if completion.len() > MAX_VARCHAR || text.len() > MAX_VARCHAR || bytes > self.max_entry_bytes {
            return Err(CacheError::TooLarge);
        }
        self.closed("insert")?;
        let result = self.try_insert(partition, fingerprint, text, embedding, completion, now).await;
        self.recorded(self.fail_open("insert", result))
    }

    /// Deletes expired entries (searches already skip them; this keeps the collection small),
    /// then counts the live ones for the entries gauge.
    pub async fn cleanup(&self, now: Instant) -> bool {
        let result = self.try_cleanup(now).await;
        let cleaned = self.fail_open("cleanup", result).is_ok();
        if let Ok(n) = self.count(now).await {
            self.metrics.entries(n);
        }
        cleaned
    }

    /// Live entries (a `count(*)` query); an error is counted before it is returned.
    pub async fn count(&self, now: Instant) -> Result<usize, CacheError> {
        let result = self.try_count(now).await;
        self.fail_open("count", result)
    }

    /// Runs [`Self::cleanup`] every `every` until the cache is dropped.
    pub fn spawn_cleanup(self: &std::sync::Arc<Self>, every: Duration) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                cache.cleanup(Instant::now()).await;
            }
        });
    }

    async fn try_lookup_exact(&self, partition: &Partition, fingerprint: Fingerprint, prompt: PromptKey, now: Instant) -> anyhow::Result<Option<Hit>> {
        let client = self.client().await?;
        let group = group_of(partition, fingerprint);
        let id = entry_id(&group, prompt);
        let request = QueryRequest::builder()
            .collection_name(&self.link.settings.collection)
            .filter(format!("id == \"{id}\" && expires_at > {}", unix_ms(now)))
            .output_fields(["completion"])
            .limit(1)
            .consistency_level(self.link.settings.consistency)
            .build()?;
        let response = client.query(request).await?;
        let completions = response.results().get_output_field("completion").and_then(FieldData::as_varchar).unwrap_or_default();
        Ok(completions.first().map(|c| Hit { tier: Tier::Exact, id: short_id(&id), completion: c.clone().into_bytes(), similarity: 1.0 }))
    }

    async fn try_candidates(&self, partition: &Partition, fingerprint: Fingerprint, embedding: &[f32], now: Instant) -> anyhow::Result<Vec<Candidate>> {
        let client = self.client().await?;
        let group = group_of(partition, fingerprint);
        let request = SearchRequest::builder()
            .collection_name(&self.link.settings.collection)
            .vector_field("embedding")
            .vectors(SearchVectors::Float(vec![embedding.to_vec()]))
            .filter(format!("group == \"{group}\" && expires_at > {}", unix_ms(now)))
            .output_fields(["prompt", "completion"])
            .limit(self.link.settings.top_k as i64)
            .metric_type(MetricType::Ip)
            .extra_params(HashMap::from([("ef".to_owned(), self.link.settings.ef.max(self.link.settings.top_k).to_string())]))
            .consistency_level(self.link.settings.consistency)
            .build()?;
        let response = client.search(request).await?;
        let Some(result) = response.results().iter().next() else { return Ok(Vec::new()) };
        // `rows()` fails against Milvus 2.3.5 (no primary field name in the reply): read columns.
        let ids = match result.get_ids() {
            Ids::VarChar(ids) => ids.clone(),
            Ids::Int64(ids) => ids.iter().map(i64::to_string).collect(),
            other => bail!("unexpected id type in search reply: {other:?}"),
        };
        if result.get_ids().is_empty() {
            return Ok(Vec::new()); // no output columns then
        }
        let column = |name: &str| result.get_output_field(name).and_then(FieldData::as_varchar).map(<[String]>::to_vec).ok_or_else(|| anyhow!("search reply without '{name}'"));
        let (prompts, completions) = (column("prompt")?, column("completion")?);
        let scores = result.get_scores();
        if [prompts.len(), completions.len(), scores.len()].iter().any(|n| *n != ids.len()) {
            bail!("search reply columns of different lengths");
        }
        Ok(ids
            .iter()
            .zip(scores)
            .zip(prompts.into_iter().zip(completions))
            .map(|((id, score), (text, completion))| Candidate { hit: Hit { tier: Tier::Semantic, id: short_id(id), completion: completion.into_bytes(), similarity: *score }, text })
            .collect())
    }

    async fn try_insert(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Vec<f32>, completion: String, now: Instant) -> anyhow::Result<()> {
        if embedding.len() != self.link.settings.dim {
            bail!("embedding has {} dimensions, the collection {}", embedding.len(), self.link.settings.dim);
        }
        let client = self.client().await?;
        let rows = Rows::of(vec![(partition, fingerprint, text, embedding, completion)]);
        let expires_at = unix_ms(now) + self.ttl.as_millis() as i64;
        // Upsert: the same prompt answered again replaces its entry (the embedded backend keeps
        // the newest too), and the exact tier finds it by id.
        client.upsert(UpsertRequest::builder().insert(rows.request(&self.link.settings.collection, expires_at)?).build()?).await?;
        Ok(())
    }

    /// Stores many answers in one upsert (loading a cache, benchmarks); errors are returned, not
    /// counted. Rows: partition, fingerprint, prompt, embedding, completion.
    pub async fn insert_many(&self, rows: Vec<(Partition, Fingerprint, String, Vec<f32>, String)>, now: Instant) -> anyhow::Result<()> {
        let client = self.client_now().await?;
        let expires_at = unix_ms(now) + self.ttl.as_millis() as i64;
        client.upsert(UpsertRequest::builder().insert(Rows::of(rows).request(&self.link.settings.collection, expires_at)?).build()?).await?;
        Ok(())
    }

    async fn try_count(&self, now: Instant) -> anyhow::Result<usize> {
        let client = self.client().await?;
        let request = QueryRequest::builder()
            .collection_name(&self.link.settings.collection)
            .filter(format!("expires_at > {}", unix_ms(now)))
            .output_fields(["count(*)"])
            .consistency_level(self.link.settings.consistency)
            .build()?;
        let response = client.query(request).await?;
        let count = response.results().get_output_field("count(*)").and_then(FieldData::as_int64).and_then(|v| v.first().copied());
        Ok(count.ok_or_else(|| anyhow!("count(*) reply without a count"))? as usize)
    }

    async fn try_cleanup(&self, now: Instant) -> anyhow::Result<usize> {
        self.delete_where(&format!("expires_at <= {}", unix_ms(now))).await
    }

    /// Removes the entries the selector matches (all of them for an empty one: the admin
    /// flush); returns how many. An error is counted before it is returned.
    pub async fn invalidate(&self, selector: &Selector) -> Result<usize, CacheError> {
        let result = self.delete_where(&selector_filter(selector)).await;
        self.fail_open("invalidate", result)
    }

    /// Deletes the entries matching `filter`: their ids first, then a delete by id, a page at a
    /// time, so each delete stays bounded. Returns how many. The id queries read strongly: Milvus
    /// applies deletes asynchronously (even session reads see them late), and a stale page would
    /// count entries twice.
    async fn delete_where(&self, filter: &str) -> anyhow::Result<usize> {
        let client = self.client().await?;
        let collection = &self.link.settings.collection;
        let mut deleted = 0;
        loop {
            let expired = QueryRequest::builder()
                .collection_name(collection)
                .filter(filter.to_string())
                .output_fields(["id"])
                .limit(CLEANUP_PAGE)
                .consistency_level(ConsistencyLevel::Strong)
                .build()?;
            let response = client.query(expired).await?;
            let ids = response.results().get_output_field("id").and_then(FieldData::as_varchar).unwrap_or_default();
            if ids.is_empty() {
                return Ok(deleted);
            }
            let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
            let request = DeleteRequest::builder().collection_name(collection).filter(format!("id in [{}]", quoted.join(","))).build()?;
            client.delete(request).await?;
            deleted += ids.len();
            if (ids.len() as i64) < CLEANUP_PAGE {
                return Ok(deleted);
            }
        }
    }

    /// A lookup's future, cut off after `timeout`. A timeout keeps the connection: Milvus is slow,
    /// not gone.
    async fn within_timeout<T>(&self, lookup: impl Future<Output = anyhow::Result<T>>) -> Result<anyhow::Result<T>, TimedOut> {
        tokio::time::timeout(self.link.settings.timeout, lookup).await.map_err(|_| TimedOut)
    }

    /// Counts an error (and, unless it was a timeout, drops the client so the next call
    /// reconnects); `None` then.
    fn fail_open<T>(&self, op: &'static str, result: impl Into<Outcome<T>>) -> Result<T, CacheError> {
        match result.into() {
            Outcome::Done(Ok(value)) => Ok(value),
            Outcome::TimedOut => {
                self.metrics.error("milvus", op);
                let timeout = self.link.settings.timeout;
                warn!(op, timeout_ms = timeout.as_millis() as u64, "milvus cache timeout; treated as a miss");
                Err(CacheError::Backend(format!("milvus {op} timed out after {timeout:?}")))
            }
            Outcome::Done(Err(e)) => {
                self.metrics.error("milvus", op);
                let message = format!("{e:#}");
                warn!(op, error = %message, "milvus cache error; treated as a miss");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
                if let Ok(mut connection) = self.link.connection.try_write() {
                    connection.client = None;
                }
                Err(CacheError::Backend(message))
            }
        }
    }

    async fn client(&self) -> anyhow::Result<Arc<ClientV2>> {
        self.link.client().await
    }

    /// The client, connecting first if needed (startup, bulk loads).
    async fn client_now(&self) -> anyhow::Result<Arc<ClientV2>> {
        let one = self.link.reconnecting.clone().lock_owned().await;
        self.link.reconnect(one).await
    }
}

/// The connection, shared with background reconnects.
struct Link {
    settings: MilvusSettings,
    connection: RwLock<Connection>,
    /// Held while connecting: one reconnect at a time.
    reconnecting: Arc<tokio::sync::Mutex<()>>,
    /// Whether lookups and stores ask Milvus at all.
    breaker: Breaker,
}

/// While the breaker is open: waits out its time, probes (half-open), and closes it or waits
/// again (for longer), until it closes or the cache is dropped. One runs per opening.
async fn probe_until_closed(link: Weak<Link>, metrics: CacheMetrics) {
    loop {
        let Some(until) = link.upgrade().and_then(|l| l.breaker.open_until()) else { return };
        tokio::time::sleep_until(until.into()).await;
        let Some(link) = link.upgrade() else { return };
        let Some(change) = link.breaker.probe_due(Instant::now()) else { continue };
        changed(&metrics, change, None);
        let probed = link.probe().await;
        if probed.is_err() {
            metrics.error("milvus", "probe");
        }
        let change = link.breaker.probed(probed.is_ok(), Instant::now());
        changed(&metrics, change, probed.err());
        if change == Change::Closed {
            return;
        }
    }
}

/// Counts and logs a change of the breaker's state (`error`: why a probe failed).
fn changed(metrics: &CacheMetrics, change: Change, error: Option<anyhow::Error>) {
    metrics.breaker("milvus", change.label());
    match (change, error) {
        (Change::Opened(open_for), None) => warn!(failures = Breaker::FAILURES, open_ms = open_for.as_millis() as u64, "milvus cache circuit open: lookups miss and stores are skipped without asking Milvus until a probe succeeds"),
        (Change::Opened(open_for), Some(e)) => warn!(open_ms = open_for.as_millis() as u64, error = %format!("{e:#}"), "milvus cache probe failed; circuit open again"),
        (Change::HalfOpen, _) => info!("milvus cache circuit half-open: probing Milvus"),
        (Change::Closed, _) => info!("milvus cache circuit closed: Milvus answers again"),
    }
}

impl Link {
    /// The current client. Never waits for a reconnect (collection setup can take seconds):
    /// without a client the call fails at once and a reconnect runs in the background, once the
    /// backoff after the last failed one has passed.
    async fn client(self: &Arc<Self>) -> anyhow::Result<Arc<ClientV2>> {
        {
            let connection = self.connection.read().await;
            if let Some(client) = &connection.client {
                return Ok(client.clone());
            }
            if Instant::now() < connection.retry_at {
                bail!("milvus unavailable (waiting to reconnect)");
            }
        }
        if let Ok(one) = self.reconnecting.clone().try_lock_owned() {
            let link = self.clone();
            tokio::spawn(async move {
                if let Err(e) = link.reconnect(one).await {
                    warn!(error = %format!("{e:#}"), "milvus cache reconnect failed");
                }
            });
        }
        bail!("milvus unavailable (reconnecting)")
    }

    /// The circuit breaker's probe: one small query, answered within a lookup's timeout. It runs
    /// in the background, so unlike a request it waits for a reconnect when there is no client.
    async fn probe(self: &Arc<Self>) -> anyhow::Result<()> {
        let client = self.reconnect(self.reconnecting.clone().lock_owned().await).await?;
        let request = QueryRequest::builder()
            .collection_name(&self.settings.collection)
            .filter("id == \"\"".to_string())
            .output_fields(["id"])
            .limit(1)
            .consistency_level(ConsistencyLevel::Eventually)
            .build()?;
        tokio::time::timeout(self.settings.timeout, client.query(request)).await.map_err(|_| anyhow!("no answer within {:?}", self.settings.timeout))??;
        Ok(())
    }

    async fn reconnect(&self, _one: tokio::sync::OwnedMutexGuard<()>) -> anyhow::Result<Arc<ClientV2>> {
        if let Some(client) = &self.connection.read().await.client {
            return Ok(client.clone());
        }
        let result = self.connect().await;
        let mut connection = self.connection.write().await;
        match result {
            Ok(client) => {
                let client = Arc::new(client);
                connection.client = Some(client.clone());
                connection.backoff = BACKOFF_MIN;
                info!(address = %self.settings.address, collection = %self.settings.collection, "milvus cache connected");
                Ok(client)
            }
            Err(e) => {
                connection.retry_at = Instant::now() + connection.backoff;
                connection.backoff = (connection.backoff * 2).min(BACKOFF_MAX);
                Err(e)
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<ClientV2> {
        let s = &self.settings;
        // One attempt per call: a request waits for nothing but `timeout`; reconnecting is ours.
        let config = ConnectConfig::new().uri(&s.address).connect_timeout(WRITE_TIMEOUT).rpc_timeout(SETUP_TIMEOUT).retry(RetryConfig::new().max_attempts(1));
        let client = ClientV2::new(&config).await.with_context(|| format!("connecting to milvus at {}", s.address))?;
        self.ensure_collection(&client).await.with_context(|| format!("preparing collection '{}'", s.collection))?;
        client.set_rpc_deadline(WRITE_TIMEOUT);
        Ok(client)
    }

    /// Creates the collection with its HNSW index if missing, and loads it.
    async fn ensure_collection(&self, client: &ClientV2) -> anyhow::Result<()> {
        let s = &self.settings;
        let exists = client.has_collection(HasCollectionRequest::builder().collection_name(&s.collection).build()?).await?.exists();
        if !exists {
            let varchar = |name: &str, len: u32| FieldSchema::new().name(name).data_type(DataType::VarChar).max_length(len);
            let schema = CollectionSchema::new()
                .description("Vane semantic cache: one answer per (group, prompt); group = sha256(tenant, model, context fingerprint)")
                .add_field(varchar("id", 64).primary_key(true).auto_id(false))
                .add_field(varchar("group", 64))
                .add_field(varchar("tenant", 64))
                .add_field(varchar("model", 64))
                .add_field(varchar("prompt_key", 64))
                .add_field(FieldSchema::new().name("expires_at").data_type(DataType::Int64))
                .add_field(varchar("prompt", MAX_VARCHAR as u32))
                .add_field(varchar("completion", MAX_VARCHAR as u32))
                .add_field(FieldSchema::new().name("embedding").data_type(DataType::FloatVector).dimension(s.dim as u32));
            client.create_collection(CreateCollectionRequest::builder().collection_name(&s.collection).schema(schema).consistency_level(s.consistency).build()?).await?;
            // Embeddings are unit vectors: inner product is the cosine similarity.
            let index = IndexParam::new()
                .field_name("embedding")
                .index_type(IndexType::Hnsw)
                .metric_type(MetricType::Ip)
                .extra_params(HashMap::from([("M".to_owned(), "16".to_owned()), ("efConstruction".to_owned(), "200".to_owned())]));
            client.create_index(CreateIndexRequest::builder().collection_name(&s.collection).index_params(vec![index]).build()?).await?;
            info!(collection = %s.collection, dim = s.dim, "milvus cache collection created");
        } else {
            let described = client.describe_collection(DescribeCollectionRequest::builder().collection_name(&s.collection).build()?).await?;
            let fields = described.description().get_field_names();
            let missing: Vec<&str> = FIELDS.iter().copied().filter(|f| !fields.iter().any(|have| have == f)).collect();
            if !missing.is_empty() {
                bail!("collection '{}' lacks the fields {missing:?} (made by an older Vane): drop it or set cache.milvus.collection to a new name", s.collection);
            }
        }
        client.load_collection(LoadCollectionRequest::builder().collection_name(&s.collection).build()?).await?;
        Ok(())
    }
}

/// Every field the collection must have: an older one without some is refused, not misread.
const FIELDS: [&str; 9] = ["id", "group", "tenant", "model", "prompt_key", "expires_at", "prompt", "completion", "embedding"];

/// Rows to upsert, as Milvus columns.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    groups: Vec<String>,
    tenants: Vec<String>,
    models: Vec<String>,
    prompt_keys: Vec<String>,
    prompts: Vec<String>,
    completions: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

impl Rows {
    /// Rows of (partition, fingerprint, prompt, embedding, completion).
    fn of(entries: Vec<(Partition, Fingerprint, String, Vec<f32>, String)>) -> Rows {
        let mut rows = Rows::default();
        for (partition, fingerprint, text, embedding, completion) in entries {
            let group = group_of(&partition, fingerprint);
            let prompt = PromptKey::of(&text);
            rows.ids.push(entry_id(&group, prompt));
            rows.groups.push(group);
            rows.tenants.push(digest(&partition.tenant));
            rows.models.push(digest(&partition.model));
            rows.prompt_keys.push(hex(prompt.as_bytes()));
            rows.prompts.push(text);
            rows.completions.push(completion);
            rows.embeddings.push(embedding);
        }
        rows
    }

    fn request(self, collection: &str, expires_at: i64) -> anyhow::Result<InsertRequest> {
        let n = self.ids.len();
        let varchar = |name: &str, values: Vec<String>| FieldData::VarChar { name: name.into(), values };
        Ok(InsertRequest::builder()
            .collection_name(collection)
            .columns(vec![
                varchar("id", self.ids),
                varchar("group", self.groups),
                varchar("tenant", self.tenants),
                varchar("model", self.models),
                varchar("prompt_key", self.prompt_keys),
                FieldData::Int64 { name: "expires_at".into(), values: vec![expires_at; n] },
                varchar("prompt", self.prompts),
                varchar("completion", self.completions),
                FieldData::FloatVector { name: "embedding".into(), values: self.embeddings },
            ])
            .build()?)
    }
}

/// The filter deleting what `selector` matches: only hex digests reach the expression, so no
/// tenant, model or prompt text can change its meaning.
fn selector_filter(selector: &Selector) -> String {
    let mut clauses = vec!["expires_at > -1".to_string()];
    if let Some(id) = selector.id {
        clauses.push(format!("id like \"{id:016x}%\""));
    }
    for (field, value) in [("tenant", &selector.tenant), ("model", &selector.model)] {
        if let Some(value) = value {
            clauses.push(format!("{field} == \"{}\"", digest(value)));
        }
    }
    if let Some(prompt) = &selector.prompt {
        clauses.push(format!("prompt_key == \"{}\"", hex(PromptKey::of(prompt).as_bytes())));
    }
    clauses.join(" && ")
}

fn digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

struct TimedOut;

enum Outcome<T> {
    Done(anyhow::Result<T>),
    TimedOut,
}

impl<T> From<anyhow::Result<T>> for Outcome<T> {
    fn from(result: anyhow::Result<T>) -> Self {
        Outcome::Done(result)
    }
}

impl<T> From<Result<anyhow::Result<T>, TimedOut>> for Outcome<T> {
    fn from(result: Result<anyhow::Result<T>, TimedOut>) -> Self {
        result.map_or(Outcome::TimedOut, Outcome::Done)
    }
}

struct Candidate {
    hit: Hit,
    text: String,
}

/// The partition boundary as one filterable value: nothing outside (tenant, model, context) can match.
fn group_of(partition: &Partition, fingerprint: Fingerprint) -> String {
    let mut h = Sha256::new();
    for part in [partition.tenant.as_bytes(), partition.model.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(fingerprint.bytes());
    hex(&h.finalize())
}

fn entry_id(group: &str, prompt: PromptKey) -> String {
    let mut h = Sha256::new();
    h.update(group.as_bytes());
    h.update(prompt.as_bytes());
    hex(&h.finalize())
}

/// The first 16 hex digits of an entry id, as the numeric id hits carry.
fn short_id(id: &str) -> u64 {
    id.get(..16).and_then(|s| u64::from_str_radix(s, 16).ok()).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Wall-clock milliseconds at the monotonic instant `at` (expiry is shared across processes).
fn unix_ms(at: Instant) -> i64 {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let wall = if at >= now { wall + (at - now) } else { wall.saturating_sub(now - at) };
    wall.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_filters_hold_digests_only() {
        assert_eq!(selector_filter(&Selector::default()), "expires_at > -1", "an empty selector flushes");
        let selector = Selector { id: Some(0xab), tenant: Some("h:\" || true || \"".into()), model: Some("auto".into()), prompt: Some(" What is  2+2? ".into()) };
        let filter = selector_filter(&selector);
        assert!(filter.contains("id like \"00000000000000ab%\""), "{filter}");
        assert!(filter.contains(&format!("tenant == \"{}\"", digest("h:\" || true || \""))), "{filter}");
        assert!(filter.contains(&format!("model == \"{}\"", digest("auto"))), "{filter}");
        assert!(filter.contains(&format!("prompt_key == \"{}\"", hex(PromptKey::of("What is 2+2?").as_bytes()))), "{filter}");
        assert_eq!(filter.matches('"').count(), 8, "only the quotes around four digests: {filter}");
    }

    #[test]
    fn groups_separate_tenants_models_and_contexts() {
        let p = |t: &str, m: &str| Partition { tenant: t.into(), model: m.into() };
        let fp = Fingerprint::of("ctx");
        let a = group_of(&p("a", "m"), fp);
        assert_eq!(a.len(), 64);
        assert_eq!(a, group_of(&p("a", "m"), fp));
        assert_ne!(a, group_of(&p("b", "m"), fp));
        assert_ne!(a, group_of(&p("a", "n"), fp));
        assert_ne!(a, group_of(&p("a", "m"), Fingerprint::of("other")));
        assert_ne!(group_of(&p("ab", ""), fp), group_of(&p("a", "b"), fp), "lengths are part of the hash");
    }

    #[tokio::test]
    async fn a_failing_milvus_opens_the_breaker_and_is_then_not_asked() {
        let standalone = crate::metrics::Standalone::default();
        // Nobody listens there: every call fails at once (no client, a reconnect in the background).
        let settings = MilvusSettings { address: "http://127.0.0.1:1".into(), collection: "c".into(), consistency: ConsistencyLevel::Bounded, timeout: Duration::from_millis(80), top_k: 5, ef: 64, dim: 4 };
        let cache = MilvusCache::new(settings, 0.9, Duration::from_secs(60), standalone.metrics.clone());
        let (p, fp) = (Partition { tenant: "t".into(), model: "m".into() }, Fingerprint::of(""));
        for _ in 0..Breaker::FAILURES {
            assert!(!cache.breaker_open());
            assert!(cache.lookup_exact(&p, fp, PromptKey::of("q"), Instant::now()).await.is_none());
        }
        assert!(cache.breaker_open(), "open after {} failures in a row", Breaker::FAILURES);
        let started = Instant::now();
        for _ in 0..100 {
            assert!(cache.lookup_exact(&p, fp, PromptKey::of("q"), Instant::now()).await.is_none());
            assert!(cache.lookup(&p, fp, &[1.0, 0.0, 0.0, 0.0], Instant::now(), |_| true).await.is_none());
        }
        assert!(started.elapsed() < Duration::from_millis(50), "misses at once: {:?}", started.elapsed());
        let stored = cache.insert(p.clone(), fp, "q".into(), vec![1.0, 0.0, 0.0, 0.0], b"{}".to_vec(), Instant::now()).await;
        assert_eq!(stored, Err(CacheError::Backend("milvus circuit breaker open".into())));
        let text = standalone.render();
        for line in [
            r#"vane_cache_errors_total{backend="milvus",op="lookup_exact"} 3"#,
            r#"vane_cache_breaker_skipped_total{backend="milvus",op="lookup_exact"} 100"#,
            r#"vane_cache_breaker_skipped_total{backend="milvus",op="lookup"} 100"#,
            r#"vane_cache_breaker_skipped_total{backend="milvus",op="insert"} 1"#,
            r#"vane_cache_breaker_transitions_total{backend="milvus",to="open"} 1"#,
            r#"vane_cache_breaker_open{backend="milvus"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains(r#"vane_cache_errors_total{backend="milvus",op="lookup"}"#), "no semantic lookup reached Milvus");
        // Its time up, a probe goes out in the background (half-open: requests still do not ask);
        // with nobody there it fails, and the circuit stays open (the breaker's own tests follow
        // it further).
        tokio::time::sleep(Breaker::MIN_OPEN + Duration::from_millis(200)).await;
        let text = standalone.render();
        for line in [r#"vane_cache_breaker_transitions_total{backend="milvus",to="half_open"} 1"#, r#"vane_cache_breaker_open{backend="milvus"} 1"#] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(cache.lookup_exact(&p, fp, PromptKey::of("q"), Instant::now()).await.is_none());
        assert!(standalone.render().contains(r#"vane_cache_breaker_skipped_total{backend="milvus",op="lookup_exact"} 101"#));
        assert!(cache.breaker_open());
    }

    #[test]
    fn unix_ms_follows_the_monotonic_clock() {
        let now = Instant::now();
        let later = unix_ms(now + Duration::from_secs(10)) - unix_ms(now);
        assert!((9_990..=10_010).contains(&later), "{later}");
        assert_eq!(short_id("00000000000000ff"), 255);
    }
}
