//! The embedded backend: entries in process memory, grouped by (partition, fingerprint) so a
//! lookup only ever compares against prompts that share the rest of the conversation, plus an
//! index of exact prompts. Each group's vectors live in a [`GroupIndex`] (flat scan when small,
//! HNSW graph when large). Entries expire after the TTL (an expiry-ordered set, so expiring
//! never scans); beyond `max_entries`, or `max_bytes` of estimated memory ([`entry_bytes`]),
//! the [`Eviction`] policy picks who leaves, and an entry over `max_entry_bytes` is never
//! stored. Everything is removed in place: nothing is ever rebuilt.
//!
//! One lock guards the entries' bookkeeping and is held for microseconds: vector search,
//! insertion into a group's index and writing a snapshot all happen outside it, so a lookup
//! never waits behind an insert into a large graph or a snapshot (`cache_bench --concurrent`).
//! An entry is registered before its vector is indexed and unregistered before its vector is
//! removed; a search may meanwhile return an id without an entry, which is skipped.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::eviction::{Eviction, Policy, Rank};
use crate::index::GroupIndex;
use crate::snapshot::{self, Saved, SnapshotError};
use crate::{Fingerprint, Floor, Hit, Partition, PromptKey, Selector, Stats, Tier, entry_bytes};
use crate::metrics::CacheMetrics;

type Key = (Partition, Fingerprint);

/// Candidates asked of the index first; more only when the guard rejects them all.
const FIRST_CANDIDATES: usize = 8;

struct Entry {
    key: Key,
    prompt: PromptKey,
    /// The prompt's text, for the near-duplicate guard.
    text: Arc<str>,
    completion: Arc<[u8]>,
    expires: Instant,
    rank: Rank,
    /// Its [`entry_bytes`].
    bytes: usize,
    /// Whether it has a vector in its group's index (not an exact-only entry).
    indexed: bool,
}

/// A group's index and how many live entries have a vector in it: at zero it is dropped.
struct Group {
    index: Arc<GroupIndex>,
    vectors: usize,
}

/// Vectors to take out of their groups' indexes once the lock is released.
type Unindex = Vec<(Arc<GroupIndex>, u64)>;

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    groups: HashMap<Key, Group>,
    /// The newest entry for each exact prompt.
    exact: HashMap<(Key, PromptKey), u64>,
    expiry: BTreeSet<(Instant, u64)>,
    eviction: Eviction,
    next_id: u64,
    /// Sum of the entries' `bytes`.
    bytes: usize,
}

pub struct MemoryCache {
    inner: Mutex<Inner>,
    threshold: Floor,
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    max_entry_bytes: usize,
    /// Where `vane_cache_bytes` is kept current.
    metrics: Option<CacheMetrics>,
}

impl MemoryCache {
    /// A cache evicting the least recently used entry first, bounded in count only.
    pub fn new(threshold: f32, ttl: Duration, max_entries: usize) -> MemoryCache {
        let cache = MemoryCache { inner: Mutex::default(), threshold: Floor::new(threshold), ttl, max_entries: max_entries.max(1), max_bytes: usize::MAX, max_entry_bytes: usize::MAX, metrics: None };
        cache.with_eviction(Policy::default())
    }

    /// Bounded in memory too: entries leave (by the eviction policy) until a new one fits in
    /// `max_bytes`, and one over `max_entry_bytes` is refused.
    pub fn with_max_bytes(self, max_bytes: usize, max_entry_bytes: usize) -> MemoryCache {
        MemoryCache { max_bytes, max_entry_bytes: max_entry_bytes.min(max_bytes), ..self }
    }

    /// Reports the estimated bytes held in `vane_cache_bytes`.
    pub fn with_metrics(self, metrics: CacheMetrics) -> MemoryCache {
        MemoryCache { metrics: Some(metrics), ..self }
    }

    /// Before any insertion.
    pub fn with_eviction(self, policy: Policy) -> MemoryCache {
        self.lock().eviction = Eviction::new(policy);
        self
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the cache, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry for exactly this prompt, if any: no embedding needed.
    pub fn lookup_exact(&self, partition: &Partition, fingerprint: Fingerprint, prompt: PromptKey, now: Instant) -> Option<Hit> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let id = *inner.exact.get(&((partition.clone(), fingerprint), prompt))?;
        let e = inner.entries.get_mut(&id).filter(|e| e.expires > now)?;
        inner.eviction.used(id, &mut e.rank);
        Some(Hit { tier: Tier::Exact, id, completion: e.completion.to_vec(), similarity: 1.0 })
    }

    /// Candidates are returned down to `threshold` from now on (a reloaded cache policy).
    pub fn set_threshold(&self, threshold: f32) {
        self.threshold.set(threshold);
    }

    /// The most similar live entry at or above the threshold whose prompt text `accept`s.
    pub fn lookup(&self, partition: &Partition, fingerprint: Fingerprint, embedding: &[f32], now: Instant, mut accept: impl FnMut(&str) -> bool) -> Option<Hit> {
        let group = Arc::clone(&self.lock().groups.get(&(partition.clone(), fingerprint))?.index);
        let (mut checked, mut count) = (0, FIRST_CANDIDATES);
        loop {
            let found = group.search(embedding, count, self.threshold.get());
            let mut guard = self.lock();
            let inner = &mut *guard;
            for &(id, similarity) in found.iter().skip(checked) {
                // Gone since the search, or not yet registered: skipped.
                let Some(e) = inner.entries.get_mut(&id) else { continue };
                if e.expires > now && accept(&e.text) {
                    inner.eviction.used(id, &mut e.rank);
                    return Some(Hit { tier: Tier::Semantic, id, completion: e.completion.to_vec(), similarity });
                }
            }
            // Fewer than asked: nothing else reaches the threshold.
            if found.len() < count || count >= group.len() {
                return None;
            }
            (checked, count) = (found.len(), count * 4);
        }
    }

    /// Stores an answer and returns its id; `None` when the entry is over `max_entry_bytes`.
    pub fn insert(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Vec<f32>, completion: Vec<u8>, now: Instant) -> Option<u64> {
        self.insert_entry(partition, fingerprint, text, Some(&embedding), completion, now)
    }

    /// [`Self::insert`]; without an embedding the entry is found by the exact tier only.
    pub fn insert_entry(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Option<&[f32]>, completion: Vec<u8>, now: Instant) -> Option<u64> {
        self.insert_until(partition, fingerprint, text, embedding, completion, now, now + self.ttl)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_until(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Option<&[f32]>, completion: Vec<u8>, now: Instant, expires: Instant) -> Option<u64> {
        let key = (partition, fingerprint);
        let bytes = entry_bytes(&key.0, text.len(), completion.len(), embedding.map_or(0, <[f32]>::len));
        if bytes > self.max_entry_bytes {
            return None;
        }
        let prompt = PromptKey::of(&text);
        let mut unindex = Unindex::new();
        let (id, group) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            Self::expire(inner, now, &mut unindex);
            // The same prompt answered again: the newest replaces it, which also makes room.
            if let Some(&older) = inner.exact.get(&(key.clone(), prompt)) {
                Self::remove(inner, older, &mut unindex);
            }
            while inner.entries.len() >= self.max_entries || inner.bytes + bytes > self.max_bytes {
                let Some(victim) = inner.eviction.victim() else { break };
                Self::remove(inner, victim, &mut unindex);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let group = embedding.map(|_| {
                let group = inner.groups.entry(key.clone()).or_insert_with(|| Group { index: Arc::new(GroupIndex::new()), vectors: 0 });
                group.vectors += 1;
                Arc::clone(&group.index)
            });
            inner.exact.insert((key.clone(), prompt), id);
            let rank = inner.eviction.inserted(id);
            inner.expiry.insert((expires, id));
            inner.entries.insert(id, Entry { key, prompt, text: text.into(), completion: completion.into(), expires, rank, bytes, indexed: group.is_some() });
            inner.bytes += bytes;
            self.publish(inner);
            (id, group)
        };
        Self::unindex(unindex);
        if let (Some(group), Some(embedding)) = (group, embedding) {
            if let Err(e) = group.insert(id, embedding) {
                // Still served by the exact tier.
                warn!(error = %e, "semantic cache: entry not indexed");
            }
            // Removed while its vector went in: the remover found nothing to take out.
            if !self.lock().entries.contains_key(&id) {
                group.remove(id);
            }
        }
        Some(id)
    }

    fn publish(&self, inner: &Inner) {
        if let Some(m) = &self.metrics {
            m.set_bytes(inner.bytes);
        }
    }

    /// Drops the entries whose TTL has passed, soonest first.
    fn expire(inner: &mut Inner, now: Instant, unindex: &mut Unindex) {
        while let Some(&(expires, id)) = inner.expiry.first() {
            if expires > now {
                break;
            }
            inner.expiry.remove(&(expires, id));
            Self::remove(inner, id, unindex);
        }
    }

    /// Unregisters an entry; its vector is left in `unindex` for [`Self::unindex`].
    fn remove(inner: &mut Inner, id: u64, unindex: &mut Unindex) {
        let Some(e) = inner.entries.remove(&id) else { return };
        let exact_key = (e.key.clone(), e.prompt);
        if inner.exact.get(&exact_key) == Some(&id) {
            inner.exact.remove(&exact_key);
        }
        if e.indexed
            && let Some(group) = inner.groups.get_mut(&e.key)
        {
            unindex.push((Arc::clone(&group.index), id));
            group.vectors -= 1;
            if group.vectors == 0 {
                inner.groups.remove(&e.key);
            }
        }
        inner.expiry.remove(&(e.expires, id));
        inner.eviction.removed(id, e.rank);
        inner.bytes -= e.bytes;
    }

    /// Outside the lock: a removal from a large graph takes a while.
    fn unindex(unindex: Unindex) {
        for (group, id) in unindex {
            group.remove(id);
        }
    }

    /// Removes the entries the selector matches (every entry for an empty one); returns how many.
    pub fn invalidate(&self, selector: &Selector) -> usize {
        let mut unindex = Unindex::new();
        let count = {
            let mut inner = self.lock();
            let doomed: Vec<u64> = inner.entries.iter().filter(|(id, e)| selector.matches(**id, &e.key.0, e.prompt)).map(|(id, _)| *id).collect();
            for id in &doomed {
                Self::remove(&mut inner, *id, &mut unindex);
            }
            self.publish(&inner);
            doomed.len()
        };
        Self::unindex(unindex);
        count
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let tenants: std::collections::HashSet<&str> = inner.entries.values().map(|e| e.key.0.tenant.as_str()).collect();
        let payload_bytes = inner.entries.values().map(|e| e.text.len() + e.completion.len()).sum();
        Stats { entries: inner.entries.len(), groups: inner.groups.len(), tenants: tenants.len(), payload_bytes, bytes: inner.bytes }
    }

    /// Writes the live entries, first-to-evict first, with their remaining TTL; returns how many.
    /// The lock is held only to list them (shared texts and answers, no copies); vectors are
    /// read and the file written while lookups and inserts go on.
    pub fn save(&self, path: &Path, dim: usize, now: Instant) -> Result<usize, SnapshotError> {
        let listed: Vec<Listed> = {
            let inner = self.lock();
            inner
                .eviction
                .in_order()
                .filter_map(|id| inner.entries.get(&id).filter(|e| e.expires > now).map(|e| (id, e)))
                .map(|(id, e)| Listed {
                    id,
                    key: e.key.clone(),
                    text: Arc::clone(&e.text),
                    completion: Arc::clone(&e.completion),
                    remaining: e.expires - now,
                    group: inner.groups.get(&e.key).filter(|_| e.indexed).map(|g| Arc::clone(&g.index)),
                })
                .collect()
        };
        let count = listed.len();
        let saved = listed.into_iter().map(|l| Saved {
            partition: l.key.0,
            fingerprint: l.key.1,
            text: l.text.to_string(),
            completion: l.completion.to_vec(),
            remaining: l.remaining,
            // Entries the index refused, removed since the listing, or exact-only have no
            // vector: write zeros, restored as exact-only.
            embedding: l.group.and_then(|g| g.vector(l.id)).unwrap_or_else(|| vec![0.0; dim]),
        });
        snapshot::write(path, dim, count, saved)?;
        Ok(count)
    }

    /// Adds the entries of a snapshot (all or none); a remaining TTL beyond the configured one
    /// is cut to it. Returns how many were loaded.
    pub fn load(&self, path: &Path, dim: usize, now: Instant) -> Result<usize, SnapshotError> {
        let saved = snapshot::read(path, dim)?;
        let mut loaded = 0;
        for s in saved.into_iter().filter(|s| !s.remaining.is_zero()) {
            let expires = now + s.remaining.min(self.ttl);
            // Entries over a lowered max_entry_bytes are left out; zeros are an exact-only entry.
            let embedding = s.embedding.iter().any(|&x| x != 0.0).then_some(s.embedding.as_slice());
            loaded += usize::from(self.insert_until(s.partition, s.fingerprint, s.text, embedding, s.completion, now, expires).is_some());
        }
        Ok(loaded)
    }
}

/// An entry as `save` lists it under the lock: shared handles only, copied after.
struct Listed {
    id: u64,
    key: Key,
    text: Arc<str>,
    completion: Arc<[u8]>,
    remaining: Duration,
    group: Option<Arc<GroupIndex>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tenant: &str, model: &str) -> Partition {
        Partition { tenant: tenant.into(), model: model.into() }
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn invalidation_removes_what_the_selector_matches_from_every_tier() {
        let c = MemoryCache::new(0.9, Duration::from_secs(60), 10);
        let now = Instant::now();
        let fp = Fingerprint::of("");
        let a1 = c.insert(p("a", "auto"), fp, "Who was the first emperor of Rome?".into(), unit(&[1.0, 0.0]), b"a1".to_vec(), now).unwrap();
        c.insert(p("a", "gpt"), fp, "2+2?".into(), unit(&[0.0, 1.0]), b"a2".to_vec(), now);
        c.insert(p("b", "auto"), fp, "Who was the first emperor of Rome?".into(), unit(&[1.0, 0.0]), b"b1".to_vec(), now);
        c.insert(p("b", "auto"), fp, "2+2?".into(), unit(&[0.0, 1.0]), b"b2".to_vec(), now);
        let bytes = 2 * entry_bytes(&p("a", "auto"), 34, 2, 2) + entry_bytes(&p("a", "gpt"), 4, 2, 2) + entry_bytes(&p("b", "auto"), 4, 2, 2);
        assert_eq!(c.stats(), Stats { entries: 4, groups: 3, tenants: 2, payload_bytes: 2 * 34 + 2 * 4 + 4 * 2, bytes });

        let by_prompt = Selector { prompt: Some(" Who was the first emperor  of Rome? ".into()), tenant: Some("b".into()), ..Selector::default() };
        assert_eq!(c.invalidate(&by_prompt), 1, "whitespace aside, within tenant b only");
        assert!(c.lookup(&p("b", "auto"), fp, &unit(&[1.0, 0.0]), now, |_| true).is_none());
        assert!(c.lookup_exact(&p("a", "auto"), fp, PromptKey::of("Who was the first emperor of Rome?"), now).is_some());

        assert_eq!(c.invalidate(&Selector { id: Some(a1), ..Selector::default() }), 1);
        assert!(c.lookup_exact(&p("a", "auto"), fp, PromptKey::of("Who was the first emperor of Rome?"), now).is_none());
        assert_eq!(c.invalidate(&Selector { tenant: Some("a".into()), ..Selector::default() }), 1);
        assert_eq!(c.invalidate(&Selector { tenant: Some("a".into()), ..Selector::default() }), 0);
        assert_eq!(c.invalidate(&Selector::default()), 1, "an empty selector flushes");
        assert_eq!(c.stats(), Stats::default());
    }

    #[test]
    fn hits_only_above_threshold_within_partition_and_fingerprint() {
        let c = MemoryCache::new(0.9, Duration::from_secs(60), 10);
        let now = Instant::now();
        let fp = Fingerprint::of("ctx");
        c.insert(p("a", "auto"), fp, "q".into(), unit(&[1.0, 0.0]), b"answer".to_vec(), now);
        let hit = c.lookup(&p("a", "auto"), fp, &unit(&[1.0, 0.1]), now, |_| true).unwrap();
        assert_eq!(hit.completion, b"answer");
        assert!(hit.similarity > 0.99);
        assert!(c.lookup(&p("a", "auto"), fp, &unit(&[1.0, 1.0]), now, |_| true).is_none(), "0.707 < 0.9");
        assert!(c.lookup(&p("b", "auto"), fp, &unit(&[1.0, 0.0]), now, |_| true).is_none(), "other tenant");
        assert!(c.lookup(&p("a", "gpt"), fp, &unit(&[1.0, 0.0]), now, |_| true).is_none(), "other model");
        assert!(c.lookup(&p("a", "auto"), Fingerprint::of("other"), &unit(&[1.0, 0.0]), now, |_| true).is_none(), "other context");
    }

    #[test]
    fn exact_tier_matches_the_same_prompt_only_and_keeps_the_newest() {
        let c = MemoryCache::new(0.9, Duration::from_secs(10), 10);
        let now = Instant::now();
        let fp = Fingerprint::of("");
        c.insert(p("t", "m"), fp, "2+2?".into(), unit(&[1.0, 0.0]), b"old".to_vec(), now);
        c.insert(p("t", "m"), fp, "2+2?".into(), unit(&[1.0, 0.0]), b"new".to_vec(), now);
        assert_eq!(c.len(), 1, "a re-answered prompt replaces its entry");
        let hit = c.lookup_exact(&p("t", "m"), fp, PromptKey::of(" 2+2? "), now).unwrap();
        assert_eq!((hit.tier, hit.completion.as_slice(), hit.similarity), (Tier::Exact, &b"new"[..], 1.0));
        assert!(c.lookup_exact(&p("u", "m"), fp, PromptKey::of("2+2?"), now).is_none(), "other tenant");
        assert!(c.lookup_exact(&p("t", "m"), Fingerprint::of("x"), PromptKey::of("2+2?"), now).is_none(), "other context");
        assert!(c.lookup_exact(&p("t", "m"), fp, PromptKey::of("2+3?"), now).is_none());
        assert!(c.lookup_exact(&p("t", "m"), fp, PromptKey::of("2+2?"), now + Duration::from_secs(11)).is_none(), "expired");
    }

    #[test]
    fn rejected_candidates_give_way_to_the_next_best() {
        let c = MemoryCache::new(0.5, Duration::from_secs(60), 10);
        let now = Instant::now();
        let fp = Fingerprint::of("");
        c.insert(p("", "m"), fp, "near".into(), unit(&[1.0, 0.05]), b"near".to_vec(), now);
        c.insert(p("", "m"), fp, "far".into(), unit(&[1.0, 0.5]), b"far".to_vec(), now);
        let hit = c.lookup(&p("", "m"), fp, &unit(&[1.0, 0.0]), now, |text| text != "near").unwrap();
        assert_eq!(hit.completion, b"far");
        assert!(c.lookup(&p("", "m"), fp, &unit(&[1.0, 0.0]), now, |_| false).is_none());
    }

    #[test]
    fn the_most_similar_entry_wins() {
        let c = MemoryCache::new(0.5, Duration::from_secs(60), 10);
        let now = Instant::now();
        let fp = Fingerprint::of("");
        c.insert(p("", "m"), fp, "far".into(), unit(&[1.0, 0.5]), b"far".to_vec(), now);
        c.insert(p("", "m"), fp, "near".into(), unit(&[1.0, 0.05]), b"near".to_vec(), now);
        assert_eq!(c.lookup(&p("", "m"), fp, &unit(&[1.0, 0.0]), now, |_| true).unwrap().completion, b"near");
    }

    #[test]
    fn entries_expire_and_the_oldest_are_evicted() {
        let c = MemoryCache::new(0.9, Duration::from_secs(10), 2);
        let t0 = Instant::now();
        let fp = Fingerprint::of("");
        c.insert(p("", "m"), fp, "1".into(), unit(&[1.0, 0.0]), b"1".to_vec(), t0);
        assert!(c.lookup(&p("", "m"), fp, &unit(&[1.0, 0.0]), t0 + Duration::from_secs(11), |_| true).is_none(), "expired");
        c.insert(p("", "m"), fp, "2".into(), unit(&[0.0, 1.0]), b"2".to_vec(), t0 + Duration::from_secs(11));
        assert_eq!(c.len(), 1, "expired entry dropped on insert");
        c.insert(p("", "m"), fp, "3".into(), unit(&[1.0, 1.0]), b"3".to_vec(), t0 + Duration::from_secs(12));
        c.insert(p("", "m"), fp, "4".into(), unit(&[1.0, -1.0]), b"4".to_vec(), t0 + Duration::from_secs(13));
        assert_eq!(c.len(), 2);
        assert_eq!(c.lock().exact.len(), 2, "evicted and expired entries leave the exact index too");
        let t = t0 + Duration::from_secs(13);
        assert!(c.lookup(&p("", "m"), fp, &unit(&[0.0, 1.0]), t, |_| true).is_none(), "oldest evicted");
        assert_eq!(c.lookup(&p("", "m"), fp, &unit(&[1.0, -1.0]), t, |_| true).unwrap().completion, b"4");
    }

    fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        unit(&v)
    }

    /// `v` moved a little: similarity about 0.97 to it.
    fn near(v: &[f32], seed: &mut u64) -> Vec<f32> {
        let noise = random_unit(seed, v.len());
        unit(&v.iter().zip(&noise).map(|(x, n)| x + 0.25 * n).collect::<Vec<_>>())
    }

    /// Entries of 10 kB each under a bound of three: the policy's victims leave until the new
    /// one fits, the bytes stay within the bound, and everything removed is accounted for.
    #[test]
    fn eviction_by_bytes_follows_the_policy_and_keeps_the_bound() {
        let fp = Fingerprint::of("");
        let t = Instant::now();
        let size = entry_bytes(&p("", "m"), 1, 10_000, 3);
        for (policy, survivor) in [(Policy::Lru, "a"), (Policy::Fifo, "b")] {
            let metrics = CacheMetrics::default();
            let c = MemoryCache::new(0.99, Duration::from_secs(60), 1000).with_eviction(policy).with_max_bytes(3 * size + size / 2, 2 * size).with_metrics(metrics.clone());
            for (name, v) in [("a", [1.0, 0.0, 0.0]), ("b", [0.0, 1.0, 0.0]), ("c", [0.0, 0.0, 1.0])] {
                c.insert(p("", "m"), fp, name.into(), unit(&v), vec![b'x'; 10_000], t).unwrap();
            }
            assert_eq!(c.stats().bytes, 3 * size);
            c.lookup_exact(&p("", "m"), fp, PromptKey::of("a"), t).unwrap(); // a is now the most recently used
            c.insert(p("", "m"), fp, "d".into(), unit(&[1.0, 1.0, 0.0]), vec![b'x'; 10_000], t).unwrap();
            let left: Vec<&str> = ["a", "b", "c", "d"].into_iter().filter(|n| c.lookup_exact(&p("", "m"), fp, PromptKey::of(n), t).is_some()).collect();
            assert_eq!(left.len(), 3, "{policy:?}: one left to make room: {left:?}");
            assert!(left.contains(&survivor) && left.contains(&"d"), "{policy:?}: {left:?}");
            // An entry of twice the size makes two more leave.
            c.insert(p("", "m"), fp, "e".into(), unit(&[0.0, 1.0, 1.0]), vec![b'x'; 2 * 10_000 - 300], t).unwrap();
            assert_eq!(c.len(), 2, "{policy:?}");
            assert!(c.stats().bytes <= 3 * size + size / 2);
            assert_eq!(metrics.bytes(), c.stats().bytes as i64, "the gauge follows");
            c.invalidate(&Selector::default());
            assert_eq!((c.len(), c.stats().bytes), (0, 0), "every removal subtracts what its insertion added");
            assert_eq!(metrics.bytes(), 0);
        }
    }

    #[test]
    fn an_entry_over_max_entry_bytes_is_never_stored() {
        let fp = Fingerprint::of("");
        let t = Instant::now();
        let c = MemoryCache::new(0.9, Duration::from_secs(60), 10).with_max_bytes(1 << 20, 50_000);
        c.insert(p("", "m"), fp, "q".into(), unit(&[1.0, 0.0]), b"small".to_vec(), t).unwrap();
        assert_eq!(c.insert(p("", "m"), fp, "q".into(), unit(&[1.0, 0.0]), vec![b'x'; 50_000], t), None, "answer too large");
        assert_eq!(c.insert(p("", "m"), fp, "y".repeat(50_000), unit(&[0.0, 1.0]), b"a".to_vec(), t), None, "prompt too large");
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup_exact(&p("", "m"), fp, PromptKey::of("q"), t).unwrap().completion, b"small", "a refused re-answer leaves the older entry");
        let whole = MemoryCache::new(0.9, Duration::from_secs(60), 10).with_max_bytes(20_000, 1 << 20);
        assert_eq!(whole.insert(p("", "m"), fp, "q".into(), unit(&[1.0, 0.0]), vec![b'x'; 30_000], t), None, "over the whole bound: nothing is evicted for it");
    }

    #[test]
    fn each_eviction_policy_picks_its_victim() {
        let t = Instant::now();
        let fp = Fingerprint::of("");
        let lookup = |c: &MemoryCache, v: &[f32]| c.lookup(&p("", "m"), fp, &unit(v), t, |_| true).map(|h| h.completion);
        // a inserted first and used twice, b used once, c never: then d needs room.
        let victim = |policy: Policy| {
            let c = MemoryCache::new(0.99, Duration::from_secs(60), 3).with_eviction(policy);
            for (name, v) in [("a", [1.0, 0.0, 0.0]), ("b", [0.0, 1.0, 0.0]), ("c", [0.0, 0.0, 1.0])] {
                c.insert(p("", "m"), fp, name.into(), unit(&v), name.as_bytes().to_vec(), t);
            }
            lookup(&c, &[0.0, 1.0, 0.0]).unwrap();
            lookup(&c, &[1.0, 0.0, 0.0]).unwrap();
            assert!(c.lookup_exact(&p("", "m"), fp, PromptKey::of("a"), t).is_some());
            c.insert(p("", "m"), fp, "d".into(), unit(&[1.0, 1.0, 1.0]), b"d".to_vec(), t);
            assert_eq!(c.len(), 3);
            ["a", "b", "c"].into_iter().find(|name| c.lookup_exact(&p("", "m"), fp, PromptKey::of(name), t).is_none()).unwrap()
        };
        assert_eq!(victim(Policy::Fifo), "a", "first in, however used");
        assert_eq!(victim(Policy::Lru), "c", "never used");
        assert_eq!(victim(Policy::Lfu), "c", "no uses");
        // lru and lfu part ways: b used twice long ago, c once just now.
        let victim = |policy: Policy| {
            let c = MemoryCache::new(0.99, Duration::from_secs(60), 2).with_eviction(policy);
            c.insert(p("", "m"), fp, "b".into(), unit(&[0.0, 1.0, 0.0]), b"b".to_vec(), t);
            c.insert(p("", "m"), fp, "c".into(), unit(&[0.0, 0.0, 1.0]), b"c".to_vec(), t);
            lookup(&c, &[0.0, 1.0, 0.0]).unwrap();
            lookup(&c, &[0.0, 1.0, 0.0]).unwrap();
            lookup(&c, &[0.0, 0.0, 1.0]).unwrap();
            c.insert(p("", "m"), fp, "d".into(), unit(&[1.0, 0.0, 0.0]), b"d".to_vec(), t);
            ["b", "c"].into_iter().find(|name| c.lookup_exact(&p("", "m"), fp, PromptKey::of(name), t).is_none()).unwrap()
        };
        assert_eq!(victim(Policy::Lru), "b");
        assert_eq!(victim(Policy::Lfu), "c");
    }

    #[test]
    fn expiry_follows_each_entry_s_own_deadline() {
        let c = MemoryCache::new(0.9, Duration::from_secs(100), 10);
        let t0 = Instant::now();
        let fp = Fingerprint::of("");
        for (i, v) in [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].iter().enumerate() {
            c.insert(p("", "m"), fp, i.to_string(), unit(v), vec![i as u8], t0 + Duration::from_secs(10 * i as u64));
        }
        c.insert(p("", "m"), fp, "late".into(), unit(&[1.0, -1.0]), b"late".to_vec(), t0 + Duration::from_secs(115));
        assert_eq!(c.len(), 2, "the entries of t0 and t0+10 expired on insert at t0+115");
        assert_eq!(c.lock().expiry.len(), 2);
        assert!(c.lookup(&p("", "m"), fp, &unit(&[1.0, 1.0]), t0 + Duration::from_secs(119), |_| true).is_some());
        assert!(c.lookup(&p("", "m"), fp, &unit(&[1.0, 1.0]), t0 + Duration::from_secs(120), |_| true).is_none(), "expired at lookup, before any insert");
    }

    /// A small group beside a big one (a graph): its lookups find its own best entry even though
    /// the big group holds closer vectors, and the big group never sees the small one's.
    #[test]
    fn a_small_group_is_isolated_from_a_big_index() {
        let dim = 48;
        let c = MemoryCache::new(0.8, Duration::from_secs(60), 100_000);
        let t = Instant::now();
        let (big, small) = (Fingerprint::of("big"), Fingerprint::of("small"));
        let mut seed = 42;
        let targets: Vec<Vec<f32>> = (0..3).map(|_| random_unit(&mut seed, dim)).collect();
        for i in 0..crate::index::GRAPH_FROM + 1000 {
            // The big group also holds near copies of the small group's vectors.
            let v = if i < 30 { near(&targets[i % 3], &mut seed) } else { random_unit(&mut seed, dim) };
            c.insert(p("t", "m"), big, format!("big {i}"), v, b"big".to_vec(), t);
        }
        for (i, v) in targets.iter().enumerate() {
            c.insert(p("t", "m"), small, format!("small {i}"), v.clone(), format!("small {i}").into_bytes(), t);
        }
        assert!(c.lock().groups[&(p("t", "m"), big)].index.is_graph());
        for (i, v) in targets.iter().enumerate() {
            let q = near(v, &mut seed);
            let hit = c.lookup(&p("t", "m"), small, &q, t, |_| true).unwrap();
            assert_eq!(hit.completion, format!("small {i}").into_bytes());
            let hit = c.lookup(&p("t", "m"), big, &q, t, |_| true).unwrap();
            assert_eq!(hit.completion, b"big", "the big group answers from its own entries");
            assert!(c.lookup(&p("u", "m"), small, &q, t, |_| true).is_none(), "other tenant");
        }
        let unrelated = random_unit(&mut seed, dim);
        assert!(c.lookup(&p("t", "m"), small, &unrelated, t, |_| true).is_none());
    }

    #[test]
    fn the_guard_can_reject_every_graph_candidate_but_one() {
        let dim = 32;
        let c = MemoryCache::new(0.7, Duration::from_secs(60), 100_000);
        let t = Instant::now();
        let fp = Fingerprint::of("");
        let mut seed = 9;
        let target = random_unit(&mut seed, dim);
        for i in 0..crate::index::GRAPH_FROM + 100 {
            let v = if i < 40 { near(&target, &mut seed) } else { random_unit(&mut seed, dim) };
            c.insert(p("", "m"), fp, format!("{i}"), v, format!("{i}").into_bytes(), t);
        }
        // Only entry 39 is acceptable: more candidates than the first batch must be tried.
        let hit = c.lookup(&p("", "m"), fp, &target, t, |text| text == "39").unwrap();
        assert_eq!(hit.completion, b"39");
        assert!(c.lookup(&p("", "m"), fp, &target, t, |_| false).is_none());
    }

    #[test]
    fn a_snapshot_restores_entries_with_their_remaining_ttl() {
        let dir = std::env::temp_dir().join(format!("vane-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cache.snap");
        let t0 = Instant::now();
        let fp = Fingerprint::of("ctx");
        let c = MemoryCache::new(0.9, Duration::from_secs(100), 10);
        c.insert(p("a", "m"), fp, "old".into(), unit(&[1.0, 0.0]), b"old".to_vec(), t0);
        c.insert(p("b", "m"), fp, "new".into(), unit(&[0.0, 1.0]), b"new".to_vec(), t0 + Duration::from_secs(50));
        c.insert(p("a", "m"), fp, "gone".into(), unit(&[1.0, 1.0]), b"gone".to_vec(), t0 - Duration::from_secs(99));
        assert_eq!(c.save(&path, 2, t0 + Duration::from_secs(60)).unwrap(), 2, "the expired entry is not written");

        let t1 = Instant::now() + Duration::from_secs(1000); // the restarted process's clock
        let d = MemoryCache::new(0.9, Duration::from_secs(100), 10);
        assert_eq!(d.load(&path, 2, t1).unwrap(), 2);
        let hit = d.lookup(&p("a", "m"), fp, &unit(&[1.0, 0.05]), t1 + Duration::from_secs(39), |_| true).unwrap();
        assert_eq!(hit.completion, b"old");
        assert!(d.lookup(&p("a", "m"), fp, &unit(&[1.0, 0.0]), t1 + Duration::from_secs(40), |_| true).is_none(), "40 s were left");
        assert!(d.lookup(&p("b", "m"), fp, &unit(&[1.0, 0.0]), t1, |_| true).is_none(), "partitions survive the round trip");
        assert_eq!(d.lookup_exact(&p("b", "m"), fp, PromptKey::of("new"), t1 + Duration::from_secs(89)).unwrap().completion, b"new");

        // Another encoder, a damaged file, no file: refused, nothing loaded.
        let e = MemoryCache::new(0.9, Duration::from_secs(100), 10);
        assert!(matches!(e.load(&path, 384, t1), Err(SnapshotError::Dim { found: 2, expected: 384 })));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(e.load(&path, 2, t1).is_err(), "truncated");
        std::fs::write(&path, b"garbage that is long enough to hold a header").unwrap();
        assert!(matches!(e.load(&path, 2, t1), Err(SnapshotError::Format(_))));
        assert!(e.load(&dir.join("missing"), 2, t1).is_err());
        assert!(e.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writers, evictions, invalidations, a snapshot and lookups at once, into a group that grows
    /// into a graph: every hit is the entry it claims to be, and afterwards each group's index
    /// holds exactly the vectors of the live entries (nothing orphaned, nothing missing).
    #[test]
    fn concurrent_writers_lookups_and_snapshots_keep_entries_and_vectors_in_step() {
        let dim = 16;
        let c = MemoryCache::new(0.95, Duration::from_secs(600), crate::index::GRAPH_FROM + 500);
        let t = Instant::now();
        let fp = Fingerprint::of("");
        let path = std::env::temp_dir().join(format!("vane-concurrent-{}.snap", std::process::id()));
        std::thread::scope(|s| {
            for w in 0..3u64 {
                let c = &c;
                s.spawn(move || {
                    let mut seed = 100 + w;
                    for i in 0..1500 {
                        let v = random_unit(&mut seed, dim);
                        let name = format!("{w}-{i}");
                        c.insert(p("t", "m"), fp, name.clone(), v.clone(), name.clone().into_bytes(), t);
                        if i % 10 == 0 {
                            let hit = c.lookup(&p("t", "m"), fp, &v, t, |_| true).map(|h| h.completion);
                            // It may have been evicted or invalidated by now, but never answered by another.
                            assert!(hit.is_none() || hit.as_deref() == Some(name.as_bytes()), "{name}: {hit:?}");
                        }
                        if i % 500 == 250 {
                            c.invalidate(&Selector { prompt: Some(format!("{w}-{}", i - 1)), ..Selector::default() });
                        }
                    }
                });
            }
            let (c, path) = (&c, &path);
            s.spawn(move || {
                for _ in 0..3 {
                    c.save(path, dim, t).unwrap();
                }
            });
        });
        let inner = c.lock();
        let indexed = inner.entries.values().filter(|e| e.indexed).count();
        let group = &inner.groups[&(p("t", "m"), fp)];
        assert_eq!((group.vectors, group.index.len()), (indexed, indexed));
        assert!(group.index.is_graph());
        assert_eq!(inner.entries.len(), crate::index::GRAPH_FROM + 500, "full, evicting");
        for (id, e) in &inner.entries {
            assert!(group.index.vector(*id).is_some(), "{}", e.text);
        }
        drop(inner);
        let restored = MemoryCache::new(0.95, Duration::from_secs(600), 10_000);
        assert!(restored.load(&path, dim, t).unwrap() > 0);
        std::fs::remove_file(&path).unwrap();
    }
}
