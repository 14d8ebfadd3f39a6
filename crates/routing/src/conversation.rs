//! Multi-turn memory: which model a conversation is on and what it has been about.
//!
//! A conversation is identified by its user turns (with the tenant and the requested model):
//! the request for turn n+1 carries turns 1..n, so it finds what turn n's request recorded.
//! Only hashes and one embedding per conversation are kept, never text.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub type Key = [u8; 32];

/// Identifies a conversation by everything that makes it the same one.
pub fn key<'a>(tenant: &str, model: &str, user_turns: impl IntoIterator<Item = &'a str>) -> Key {
    let mut h = Sha256::new();
    let mut add = |part: &str| {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    };
    add(tenant);
    add(model);
    user_turns.into_iter().for_each(add);
    h.finalize().into()
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub model: String,
    /// Normalised sum of the user turns' embeddings so far.
    pub topic: Vec<f32>,
}

pub struct Conversations {
    entries: Mutex<HashMap<Key, (State, Instant)>>,
    max: usize,
    ttl: Duration,
}

impl Conversations {
    pub fn new(max: usize, ttl: Duration) -> Conversations {
        Conversations { entries: Mutex::new(HashMap::new()), max: max.max(1), ttl }
    }

    pub fn get(&self, key: &Key, now: Instant) -> Option<State> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).filter(|(_, at)| now.duration_since(*at) < self.ttl).map(|(s, _)| s.clone())
    }

    /// Remembers `state` for `key`; returns how many conversations are remembered now (never
    /// more than the bound: expired ones go first, then the least recently seen tenth).
    pub fn put(&self, key: Key, state: State, now: Instant) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
            // Still full: forget the least recently seen tenth at once, so this stays rare.
            if entries.len() >= self.max {
                let mut ages: Vec<Instant> = entries.values().map(|(_, at)| *at).collect();
                ages.sort();
                let cut = ages[(ages.len() / 10).min(ages.len() - 1)];
                entries.retain(|_, (_, at)| *at > cut);
            }
        }
        entries.insert(key, (state, now));
        entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `a + weight * b`, normalised to unit length (a when b is empty or the sum vanishes).
pub fn blend(a: &[f32], b: &[f32], weight: f32) -> Vec<f32> {
    if b.len() != a.len() || weight == 0.0 {
        return a.to_vec();
    }
    let v: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + weight * y).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 1e-6 { v.iter().map(|x| x / n).collect() } else { a.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_tenants_models_and_turns() {
        let k = key("t", "auto", ["a", "b"]);
        assert_eq!(k, key("t", "auto", ["a", "b"]));
        assert_ne!(k, key("u", "auto", ["a", "b"]));
        assert_ne!(k, key("t", "MoM", ["a", "b"]));
        assert_ne!(k, key("t", "auto", ["ab"]));
        assert_ne!(k, key("t", "auto", ["a", "b", ""]));
    }

    #[test]
    fn remembers_expires_and_stays_bounded() {
        let c = Conversations::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let state = |m: &str| State { model: m.into(), topic: vec![1.0] };
        c.put(key("t", "auto", ["a"]), state("small"), t0);
        assert_eq!(c.get(&key("t", "auto", ["a"]), t0).unwrap().model, "small");
        assert!(c.get(&key("t", "auto", ["a"]), t0 + Duration::from_secs(61)).is_none());
        for i in 0..100 {
            let n = c.put(key("t", "auto", [i.to_string().as_str()]), state("m"), t0 + Duration::from_millis(i));
            assert!(n <= 10, "{n}");
        }
        assert!(c.len() <= 10, "{}", c.len());
        assert!(c.get(&key("t", "auto", ["99"]), t0 + Duration::from_millis(100)).is_some(), "the newest stays");
    }

    #[test]
    fn blend_is_unit_length_and_weighted() {
        let v = blend(&[1.0, 0.0], &[0.0, 1.0], 1.0);
        assert!((v[0] - v[1]).abs() < 1e-6 && (v[0] * v[0] + v[1] * v[1] - 1.0).abs() < 1e-5);
        assert_eq!(blend(&[1.0, 0.0], &[], 1.0), vec![1.0, 0.0]);
        let w = blend(&[1.0, 0.0], &[0.0, 1.0], 0.25);
        assert!(w[0] > w[1]);
    }
}
