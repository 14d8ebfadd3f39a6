//! The embedded backend: entries in process memory, grouped by (partition, fingerprint) so a
//! lookup only compares against prompts that share the rest of the conversation, plus an index
//! of exact prompts. Entries expire after the TTL; beyond `max_entries` the oldest are evicted
//! first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Fingerprint, Hit, Partition, PromptKey, Tier};
use crate::model::cosine;

type Key = (Partition, Fingerprint);

struct Entry {
    key: Key,
    prompt: PromptKey,
    /// The prompt's text, for the near-duplicate guard.
    text: String,
    embedding: Vec<f32>,
    completion: Vec<u8>,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    groups: HashMap<Key, Vec<u64>>,
    /// The newest entry for each exact prompt.
    exact: HashMap<(Key, PromptKey), u64>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
    next_id: u64,
}

pub struct MemoryCache {
    inner: Mutex<Inner>,
    threshold: f32,
    ttl: Duration,
    max_entries: usize,
}

impl MemoryCache {
    pub fn new(threshold: f32, ttl: Duration, max_entries: usize) -> MemoryCache {
        MemoryCache { inner: Mutex::default(), threshold, ttl, max_entries: max_entries.max(1) }
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
        let inner = self.lock();
        let id = inner.exact.get(&((partition.clone(), fingerprint), prompt))?;
        let e = inner.entries.get(id).filter(|e| e.expires > now)?;
        Some(Hit { tier: Tier::Exact, id: *id, completion: e.completion.clone(), similarity: 1.0 })
    }

    /// The most similar live entry at or above the threshold whose prompt text `accept`s.
    pub fn lookup(&self, partition: &Partition, fingerprint: Fingerprint, embedding: &[f32], now: Instant, mut accept: impl FnMut(&str) -> bool) -> Option<Hit> {
        let inner = self.lock();
        let ids = inner.groups.get(&(partition.clone(), fingerprint))?;
        ids.iter()
            .filter_map(|id| inner.entries.get(id).map(|e| (id, e)))
            .filter(|(_, e)| e.expires > now)
            .map(|(id, e)| (id, e, cosine(embedding, &e.embedding)))
            .filter(|(_, _, sim)| *sim >= self.threshold)
            .filter(|(_, e, _)| accept(&e.text))
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(id, e, similarity)| Hit { tier: Tier::Semantic, id: *id, completion: e.completion.clone(), similarity })
    }

    pub fn insert(&self, partition: Partition, fingerprint: Fingerprint, text: String, embedding: Vec<f32>, completion: Vec<u8>, now: Instant) -> u64 {
        let prompt = PromptKey::of(&text);
        let mut inner = self.lock();
        Self::expire(&mut inner, now);
        while inner.entries.len() >= self.max_entries {
            let Some(oldest) = inner.order.pop_front() else { break };
            Self::remove(&mut inner, oldest);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let key = (partition, fingerprint);
        inner.groups.entry(key.clone()).or_default().push(id);
        inner.order.push_back(id);
        if let Some(older) = inner.exact.insert((key.clone(), prompt), id) {
            Self::remove(&mut inner, older); // the same prompt answered again: keep the newest
        }
        inner.entries.insert(id, Entry { key, prompt, text, embedding, completion, expires: now + self.ttl });
        id
    }

    /// Drops expired entries from the front of the insertion order (all share one TTL).
    fn expire(inner: &mut Inner, now: Instant) {
        while let Some(&id) = inner.order.front() {
            match inner.entries.get(&id) {
                Some(e) if e.expires > now => break,
                _ => {
                    inner.order.pop_front();
                    Self::remove(inner, id);
                }
            }
        }
    }

    fn remove(inner: &mut Inner, id: u64) {
        let Some(e) = inner.entries.remove(&id) else { return };
        let exact_key = (e.key.clone(), e.prompt);
        if inner.exact.get(&exact_key) == Some(&id) {
            inner.exact.remove(&exact_key);
        }
        if let Some(ids) = inner.groups.get_mut(&e.key) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                inner.groups.remove(&e.key);
            }
        }
    }
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
}
