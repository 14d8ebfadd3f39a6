//! What Route computed for a request, kept until its answer arrives in Store, so Store never
//! re-embeds. Bounded and short-lived: an answer that never comes must not leak memory.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache::{Fingerprint, Partition};

pub struct Pending {
    pub partition: Partition,
    pub fingerprint: Fingerprint,
    /// The prompt's text (the exact tier hashes it; the guard compares it).
    pub prompt: String,
    /// The semantic tier's key; `None` when the embedding does not stand for the whole prompt
    /// (the answer is then cached for the exact tier only).
    pub embedding: Option<Vec<f32>>,
}

/// Pending entries by ticket, and tickets in the order they were issued (for expiry).
type Book = (HashMap<String, (Pending, Instant)>, VecDeque<String>);

pub struct Tickets {
    inner: Mutex<Book>,
    counter: AtomicU64,
    seed: RandomState,
    ttl: Duration,
    max: usize,
}

impl Tickets {
    pub fn new(ttl: Duration, max: usize) -> Tickets {
        Tickets { inner: Mutex::default(), counter: AtomicU64::new(0), seed: RandomState::new(), ttl, max: max.max(1) }
    }

    /// Keeps `pending` and returns its ticket: unique and not guessable from earlier ones.
    pub fn issue(&self, pending: Pending, now: Instant) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let ticket = format!("{n:x}-{:016x}", self.seed.hash_one(n));
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        while map.len() >= self.max || order.front().is_some_and(|t| map.get(t).is_none_or(|(_, at)| now.duration_since(*at) > self.ttl)) {
            let Some(old) = order.pop_front() else { break };
            map.remove(&old);
        }
        map.insert(ticket.clone(), (pending, now));
        order.push_back(ticket.clone());
        ticket
    }

    /// Takes the pending entry back, once; `None` when unknown or expired.
    pub fn redeem(&self, ticket: &str, now: Instant) -> Option<Pending> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (pending, at) = guard.0.remove(ticket)?;
        (now.duration_since(at) <= self.ttl).then_some(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending { partition: Partition { tenant: String::new(), model: "m".into() }, fingerprint: Fingerprint::of(""), prompt: String::new(), embedding: Some(vec![1.0]) }
    }

    #[test]
    fn redeem_once_within_ttl() {
        let t = Tickets::new(Duration::from_secs(5), 10);
        let now = Instant::now();
        let a = t.issue(pending(), now);
        let b = t.issue(pending(), now);
        assert_ne!(a, b);
        assert!(t.redeem(&a, now).is_some());
        assert!(t.redeem(&a, now).is_none(), "only once");
        assert!(t.redeem(&b, now + Duration::from_secs(6)).is_none(), "expired");
        assert!(t.redeem("nope", now).is_none());
    }

    #[test]
    fn bounded() {
        let t = Tickets::new(Duration::from_secs(5), 2);
        let now = Instant::now();
        let first = t.issue(pending(), now);
        t.issue(pending(), now);
        t.issue(pending(), now);
        assert!(t.redeem(&first, now).is_none(), "oldest dropped when full");
    }
}
