//! Which entry leaves first when the cache is full: `lru` (least recently used), `lfu` (least
//! frequently used, ties broken by recency) or `fifo` (oldest insertion).
//!
//! Every entry has a rank; the set of (rank, id) is ordered, so the victim is its first element
//! and a use re-ranks one entry in O(log n), with no scan.

use std::collections::BTreeSet;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Lru,
    Lfu,
    Fifo,
}

/// Lower ranks are evicted first: (uses, tick) under lfu, (tick, 0) otherwise.
pub type Rank = (u64, u64);

#[derive(Default)]
pub struct Eviction {
    policy: Policy,
    order: BTreeSet<(Rank, u64)>,
    /// Logical clock: one tick per insertion or use.
    tick: u64,
}

impl Eviction {
    pub fn new(policy: Policy) -> Eviction {
        Eviction { policy, ..Eviction::default() }
    }

    /// Ranks a new entry; the caller keeps the rank to hand back on use and removal.
    pub fn inserted(&mut self, id: u64) -> Rank {
        self.tick += 1;
        let rank = match self.policy {
            Policy::Lfu => (0, self.tick),
            Policy::Lru | Policy::Fifo => (self.tick, 0),
        };
        self.order.insert((rank, id));
        rank
    }

    /// A lookup served this entry.
    pub fn used(&mut self, id: u64, rank: &mut Rank) {
        self.tick += 1;
        let new = match self.policy {
            Policy::Lru => (self.tick, 0),
            Policy::Lfu => (rank.0 + 1, self.tick),
            Policy::Fifo => return,
        };
        self.order.remove(&(*rank, id));
        self.order.insert((new, id));
        *rank = new;
    }

    pub fn removed(&mut self, id: u64, rank: Rank) {
        self.order.remove(&(rank, id));
    }

    /// The entry to evict next.
    pub fn victim(&self) -> Option<u64> {
        self.order.first().map(|(_, id)| *id)
    }

    /// Ids from the first to be evicted to the last.
    pub fn in_order(&self) -> impl Iterator<Item = u64> + '_ {
        self.order.iter().map(|(_, id)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts 1, 2, 3, uses 1, 1, then 2, then evicts everything.
    fn eviction_order(policy: Policy) -> Vec<u64> {
        let mut e = Eviction::new(policy);
        let mut ranks: Vec<Rank> = (1..=3).map(|id| e.inserted(id)).collect();
        e.used(1, &mut ranks[0]);
        e.used(1, &mut ranks[0]);
        e.used(2, &mut ranks[1]);
        let mut out = Vec::new();
        while let Some(id) = e.victim() {
            e.removed(id, ranks[id as usize - 1]);
            out.push(id);
        }
        out
    }

    #[test]
    fn each_policy_evicts_in_its_order() {
        assert_eq!(eviction_order(Policy::Fifo), [1, 2, 3], "insertion order, uses ignored");
        assert_eq!(eviction_order(Policy::Lru), [3, 1, 2], "3 never used, 2 used last");
        assert_eq!(eviction_order(Policy::Lfu), [3, 2, 1], "0 uses, 1 use, 2 uses");
        let mut e = Eviction::new(Policy::Lfu);
        let mut a = e.inserted(1);
        e.inserted(2);
        e.used(1, &mut a);
        assert_eq!(e.victim(), Some(2), "lfu: the unused entry goes first even if newer");
        let mut e = Eviction::new(Policy::Lru);
        let mut a = e.inserted(1);
        e.inserted(2);
        e.used(1, &mut a);
        assert_eq!(e.victim(), Some(2), "lru: the entry used least recently");
    }
}
