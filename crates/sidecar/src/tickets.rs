//! What Route computed for a request, kept until its answer arrives in Store, so Store never
//! re-embeds. Bounded in count, bytes and time, and released as soon as the filter knows no
//! answer will be stored (an error status, a truncated or oversized answer, a client gone):
//! answers that never come must not grow the sidecar (a ticket holds the whole prompt).
//!
//! Tickets are numbered in issue order, so the oldest is the first key of an ordered map and
//! dropping it, or any redeemed ticket, leaves nothing behind.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vane_cache::{Fingerprint, Partition};
use crate::metrics::Metrics;

pub struct Pending {
    pub partition: Partition,
    pub fingerprint: Fingerprint,
    /// The prompt's text (the exact tier hashes it; the guard compares it).
    pub prompt: String,
    /// The semantic tier's key; `None` when the embedding does not stand for the whole prompt
    /// (the answer is then cached for the exact tier only).
    pub embedding: Option<Vec<f32>>,
}

/// Map node, key, instant and size fields per ticket: a rough, fixed share of the bookkeeping.
const TICKET_OVERHEAD: usize = 160;

impl Pending {
    /// What holding this costs, estimated: the heap parts plus a fixed overhead.
    pub fn bytes(&self) -> usize {
        let p = &self.partition;
        self.prompt.len() + self.embedding.as_ref().map_or(0, Vec::len) * size_of::<f32>() + p.tenant.len() + p.model.len() + size_of::<Pending>() + TICKET_OVERHEAD
    }
}

/// The bounds of [`Tickets`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub ttl: Duration,
    pub max_count: usize,
    /// All pending tickets together.
    pub max_bytes: usize,
    /// One ticket: a prompt that could never be stored (over `cache.max_entry_bytes`) gets none.
    pub max_one: usize,
}

struct Slot {
    /// The unguessable half of the ticket.
    tag: u64,
    pending: Pending,
    at: Instant,
    bytes: usize,
}

#[derive(Default)]
struct Book {
    /// By issue number: the first is the oldest.
    slots: BTreeMap<u64, Slot>,
    next: u64,
    bytes: usize,
}

pub struct Tickets {
    inner: Mutex<Book>,
    seed: RandomState,
    limits: Limits,
    metrics: Metrics,
}

impl Tickets {
    pub fn new(limits: Limits, metrics: Metrics) -> Tickets {
        let limits = Limits { max_count: limits.max_count.max(1), ..limits };
        Tickets { inner: Mutex::default(), seed: RandomState::new(), limits, metrics }
    }

    /// Keeps `pending` and returns its ticket (unique, not guessable from earlier ones), making
    /// room by dropping the oldest; `None` when it alone is over a bound (nothing is stored then).
    pub fn issue(&self, pending: Pending, now: Instant) -> Option<String> {
        let bytes = pending.bytes();
        if bytes > self.limits.max_one.min(self.limits.max_bytes) {
            self.metrics.ticket_dropped("too_large");
            return None;
        }
        let mut book = self.lock();
        self.expire(&mut book, now);
        while book.slots.len() >= self.limits.max_count || book.bytes + bytes > self.limits.max_bytes {
            let Some((_, old)) = book.slots.pop_first() else { break };
            book.bytes -= old.bytes;
            self.metrics.ticket_dropped("evicted");
        }
        let n = book.next;
        book.next += 1;
        let tag = self.seed.hash_one(n);
        book.slots.insert(n, Slot { tag, pending, at: now, bytes });
        book.bytes += bytes;
        self.report(&book);
        Some(format!("{n:x}-{tag:016x}"))
    }

    /// Takes the pending entry back, once; `None` when unknown, dropped or expired.
    pub fn redeem(&self, ticket: &str, now: Instant) -> Option<Pending> {
        let mut book = self.lock();
        self.expire(&mut book, now);
        let slot = Self::take(&mut book, ticket);
        self.report(&book);
        slot.map(|s| s.pending)
    }

    /// Drops a ticket whose answer will never be stored; `false` when it was already gone.
    pub fn release(&self, ticket: &str, now: Instant) -> bool {
        let mut book = self.lock();
        self.expire(&mut book, now);
        let released = Self::take(&mut book, ticket).is_some();
        if released {
            self.metrics.ticket_dropped("released");
        }
        self.report(&book);
        released
    }

    /// Pending tickets and their estimated bytes.
    pub fn usage(&self) -> (usize, usize) {
        let book = self.lock();
        (book.slots.len(), book.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book stays consistent between statements; a panic elsewhere must not stop stores.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(book: &mut Book, ticket: &str) -> Option<Slot> {
        let (n, tag) = ticket.split_once('-')?;
        let (n, tag) = (u64::from_str_radix(n, 16).ok()?, u64::from_str_radix(tag, 16).ok()?);
        if book.slots.get(&n)?.tag != tag {
            return None;
        }
        let slot = book.slots.remove(&n)?;
        book.bytes -= slot.bytes;
        Some(slot)
    }

    /// Drops the tickets past their TTL: issue order is age order, so only the front is looked at.
    fn expire(&self, book: &mut Book, now: Instant) {
        while let Some(entry) = book.slots.first_entry() {
            if now.saturating_duration_since(entry.get().at) <= self.limits.ttl {
                break;
            }
            book.bytes -= entry.remove().bytes;
            self.metrics.ticket_dropped("expired");
        }
    }

    fn report(&self, book: &Book) {
        self.metrics.tickets(book.slots.len(), book.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(prompt_bytes: usize) -> Pending {
        Pending { partition: Partition { tenant: String::new(), model: "m".into() }, fingerprint: Fingerprint::of(""), prompt: "x".repeat(prompt_bytes), embedding: Some(vec![1.0; 4]) }
    }

    fn tickets(max_count: usize, max_bytes: usize) -> (Tickets, Metrics) {
        let metrics = Metrics::default();
        let limits = Limits { ttl: Duration::from_secs(5), max_count, max_bytes, max_one: usize::MAX };
        (Tickets::new(limits, metrics.clone()), metrics)
    }

    #[test]
    fn redeem_once_within_ttl() {
        let (t, _) = tickets(10, 1 << 20);
        let now = Instant::now();
        let a = t.issue(pending(1), now).unwrap();
        let b = t.issue(pending(1), now).unwrap();
        assert_ne!(a, b);
        assert!(t.redeem(&a, now).is_some());
        assert!(t.redeem(&a, now).is_none(), "only once");
        assert!(t.redeem(&b, now + Duration::from_secs(6)).is_none(), "expired");
        assert_eq!(t.usage(), (0, 0), "the expired ticket is gone, not only unredeemable");
        for forged in ["nope", "0-0", "zz-1", "", "-"] {
            assert!(t.redeem(forged, now).is_none(), "{forged}");
        }
        let c = t.issue(pending(1), now).unwrap();
        let (n, tag) = c.split_once('-').unwrap();
        assert!(t.redeem(&format!("{n}-{:016x}", u64::from_str_radix(tag, 16).unwrap() ^ 1), now).is_none(), "a guessed tag");
        assert!(t.redeem(&c, now).is_some());
    }

    #[test]
    fn bounded_by_count_oldest_first() {
        let (t, _) = tickets(2, 1 << 20);
        let now = Instant::now();
        let first = t.issue(pending(1), now).unwrap();
        let second = t.issue(pending(1), now).unwrap();
        t.issue(pending(1), now).unwrap();
        assert!(t.redeem(&first, now).is_none(), "oldest dropped when full");
        assert!(t.redeem(&second, now).is_some());
    }

    #[test]
    fn bounded_by_bytes_oldest_first() {
        let one = pending(10_000).bytes();
        let (t, metrics) = tickets(1000, 3 * one + one / 2);
        let now = Instant::now();
        let issued: Vec<String> = (0..5).map(|_| t.issue(pending(10_000), now).unwrap()).collect();
        assert_eq!(t.usage(), (3, 3 * one), "three fit in the bound");
        assert!(t.redeem(&issued[0], now).is_none() && t.redeem(&issued[1], now).is_none(), "the two oldest made room");
        assert!(t.redeem(&issued[2], now).is_some());
        assert_eq!(t.usage(), (2, 2 * one));
        // A small ticket fits beside them without dropping anything.
        assert!(t.issue(pending(10), now).is_some());
        assert_eq!(t.usage().0, 3);
        let text = metrics.render();
        assert!(text.contains("vane_tickets_dropped_total{reason=\"evicted\"} 2"), "{text}");
        assert!(text.contains("vane_tickets 3\n"), "{text}");
        assert!(text.contains(&format!("vane_tickets_bytes {}\n", 2 * one + pending(10).bytes())), "{text}");
    }

    #[test]
    fn a_ticket_over_a_bound_is_not_issued() {
        let metrics = Metrics::default();
        let limits = Limits { ttl: Duration::from_secs(5), max_count: 10, max_bytes: 1 << 20, max_one: 50_000 };
        let t = Tickets::new(limits, metrics.clone());
        let now = Instant::now();
        let kept = t.issue(pending(100), now).unwrap();
        assert!(t.issue(pending(60_000), now).is_none(), "over max_one: it could never be stored");
        let (t2, _) = tickets(10, 20_000);
        assert!(t2.issue(pending(30_000), now).is_none(), "over the whole bound");
        assert!(t.redeem(&kept, now).is_some(), "nothing was dropped for it");
        assert!(metrics.render().contains("vane_tickets_dropped_total{reason=\"too_large\"} 1"));
    }

    #[test]
    fn release_frees_at_once_and_only_once() {
        let (t, metrics) = tickets(10, 1 << 20);
        let now = Instant::now();
        let a = t.issue(pending(5000), now).unwrap();
        let b = t.issue(pending(5000), now).unwrap();
        assert!(t.release(&a, now));
        assert!(!t.release(&a, now), "already released");
        assert!(t.redeem(&a, now).is_none(), "a released ticket cannot be stored");
        assert_eq!(t.usage(), (1, pending(5000).bytes()));
        assert!(t.release(&b, now));
        assert_eq!(t.usage(), (0, 0));
        let text = metrics.render();
        assert!(text.contains("vane_tickets_dropped_total{reason=\"released\"} 2"), "{text}");
        assert!(text.contains("vane_tickets 0\n") && text.contains("vane_tickets_bytes 0\n"), "{text}");
    }

    #[test]
    fn expiry_drops_the_old_and_keeps_the_young() {
        let (t, metrics) = tickets(10, 1 << 20);
        let t0 = Instant::now();
        let old = t.issue(pending(1), t0).unwrap();
        let young = t.issue(pending(1), t0 + Duration::from_secs(4)).unwrap();
        assert!(!t.release("unknown-1", t0 + Duration::from_secs(6)));
        assert_eq!(t.usage().0, 1, "the old one expired on the way");
        assert!(t.redeem(&old, t0 + Duration::from_secs(6)).is_none());
        assert!(t.redeem(&young, t0 + Duration::from_secs(6)).is_some());
        assert!(metrics.render().contains("vane_tickets_dropped_total{reason=\"expired\"} 1"));
    }
}
