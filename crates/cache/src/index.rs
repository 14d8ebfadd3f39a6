//! The vectors of one (partition, fingerprint) group, searchable by inner product (embeddings
//! are unit length, so it is the cosine).
//!
//! Why one index per group rather than one global index with a filter: a lookup may only ever
//! see its own group, and most groups are small (one tenant × model × conversation context). A
//! filtered HNSW search over a global graph walks the neighbours of the query whatever group
//! they belong to, so when the group is a tiny fraction of the graph it either visits most of the
//! graph or misses the group's best match. Measured (`cache_bench --crossover`, one 20k-vector
//! USearch graph, filtered search): it found the best match, but in 1.0 / 4.7 / 6.7 ms p50 for
//! groups of 10% / 1% / 0.1% of the graph, where a flat scan of the group takes 50 / 5 / <1 µs.
//! Per group, the search space is exactly the group.
//!
//! Small groups are a flat matrix scanned in full: exact, no graph to maintain, and faster than
//! HNSW below about 2000 vectors (`cache_bench --crossover` measures both). A group that reaches
//! [`GRAPH_FROM`] vectors moves into a USearch HNSW graph, which supports removal (its slots are
//! reused by later insertions), so TTL expiry and eviction never rebuild anything. A group that
//! shrinks again stays a graph until it is empty and dropped.
//!
//! The graph stores f16: half the memory, and a search that is bound by memory reads (random
//! access to 1.5 KB vectors) got ~2x faster at 100k vectors; the similarities it returns are
//! within ~1e-3 of the f32 ones.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Group size at which the flat scan gives way to the graph: where they cost the same
/// (`cache_bench --crossover`: 51 µs flat against 50 µs HNSW at 2048 vectors of 384-d).
pub const GRAPH_FROM: usize = 2048;

/// HNSW parameters (USearch's defaults): 16 links per node, beams of 128 when adding and 64
/// when searching.
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 128;
const EXPANSION_SEARCH: usize = 64;

/// Calls a graph serves at once (USearch keeps a context per concurrent call and fails a call
/// that finds none free, so callers beyond this wait in [`Slots`]).
const SLOTS: usize = 16;

/// One group's vectors, searched and changed without the cache's lock and without lookups
/// waiting on writers: searches share `layout`'s read lock, writers take turns on `writer`, and
/// a graph adds and removes under the read lock too (USearch adds, removes and searches
/// concurrently). Only a flat group's row change and a graph's growth (a reallocation, once per
/// doubling) take the write lock; the promotion to a graph is built beside the flat scan and
/// swapped in.
#[derive(Default)]
pub struct GroupIndex {
    layout: RwLock<Layout>,
    writer: Mutex<()>,
}

pub enum Layout {
    Flat(Flat),
    Graph(Graph),
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Flat(Flat::default())
    }
}

#[derive(Default, Clone)]
pub struct Flat {
    ids: Vec<u64>,
    /// Row `i` is the vector of `ids[i]`.
    vectors: Vec<f32>,
    rows: HashMap<u64, usize>,
}

pub struct Graph {
    index: Index,
    slots: Slots,
}

#[derive(Debug, thiserror::Error)]
#[error("vector index: {0}")]
pub struct IndexError(String);

/// What a [`GroupIndex`] insertion does.
enum Step {
    Row,
    Promote(Flat),
    Grow,
    Add,
}

/// A panic elsewhere while a lock was held leaves nothing here half-changed that matters more
/// than serving on.
fn unpoison<G>(r: Result<G, PoisonError<G>>) -> G {
    r.unwrap_or_else(PoisonError::into_inner)
}

impl GroupIndex {
    pub fn new() -> GroupIndex {
        GroupIndex::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Layout> {
        unpoison(self.layout.read())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Layout> {
        unpoison(self.layout.write())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        unpoison(self.writer.lock())
    }

    pub fn len(&self) -> usize {
        match &*self.read() {
            Layout::Flat(f) => f.ids.len(),
            Layout::Graph(g) => g.index.size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_graph(&self) -> bool {
        matches!(&*self.read(), Layout::Graph(_))
    }

    pub fn insert(&self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        let _turn = self.writer();
        // Writers take turns, so what is read here stays true until this one changes it.
        let step = match &*self.read() {
            Layout::Flat(flat) if !flat.ids.is_empty() && flat.dim() != vector.len() => {
                return Err(IndexError(format!("{}-d vector in a {}-d group", vector.len(), flat.dim())));
            }
            Layout::Flat(flat) if flat.ids.len() + 1 >= GRAPH_FROM => Step::Promote(flat.clone()),
            Layout::Flat(_) => Step::Row,
            Layout::Graph(graph) if graph.index.size() >= graph.index.capacity() => Step::Grow,
            Layout::Graph(_) => Step::Add,
        };
        match step {
            Step::Row => {
                if let Layout::Flat(flat) = &mut *self.write() {
                    flat.insert(id, vector);
                }
                Ok(())
            }
            Step::Promote(flat) => {
                // Thousands of graph insertions: built while lookups go on scanning the rows.
                let graph = Graph::from_flat(&flat, vector.len())?;
                graph.add(id, vector)?;
                *self.write() = Layout::Graph(graph);
                Ok(())
            }
            Step::Grow | Step::Add => {
                // Only growing needs the graph to itself: an add runs beside searches. (A
                // tuple `(&step, &*self.write())` would take the write lock for every add.)
                if matches!(step, Step::Grow)
                    && let Layout::Graph(graph) = &*self.write()
                {
                    graph.grow(graph.index.size() + 1)?;
                }
                match &*self.read() {
                    Layout::Graph(graph) => graph.add(id, vector),
                    Layout::Flat(_) => Err(IndexError("a graph became flat".into())),
                }
            }
        }
    }

    pub fn remove(&self, id: u64) {
        let _turn = self.writer();
        if let Layout::Graph(g) = &*self.read() {
            // Removing a key the graph holds cannot fail; a key it does not hold is a no-op.
            let _ = g.slots.run(|| g.index.remove(id));
            return;
        }
        if let Layout::Flat(f) = &mut *self.write() {
            f.remove(id);
        }
    }

    /// Up to `count` (id, similarity) pairs at or above `min_similarity`, most similar first.
    /// Exact for a flat group, approximate (HNSW) for a graph.
    pub fn search(&self, query: &[f32], count: usize, min_similarity: f32) -> Vec<(u64, f32)> {
        let mut found = match &*self.read() {
            Layout::Flat(f) => f.scan(query, min_similarity),
            Layout::Graph(g) => g.search(query, count),
        };
        found.retain(|(_, sim)| *sim >= min_similarity);
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(count);
        found
    }

    /// The stored vector of `id` (for snapshots).
    pub fn vector(&self, id: u64) -> Option<Vec<f32>> {
        match &*self.read() {
            Layout::Flat(f) => f.row(id).map(<[f32]>::to_vec),
            Layout::Graph(g) => {
                let mut out = Vec::new();
                g.slots.run(|| g.index.export(id, &mut out)).ok().filter(|n| *n == 1).map(|_| out)
            }
        }
    }
}

impl Flat {
    fn dim(&self) -> usize {
        self.vectors.len().checked_div(self.ids.len()).unwrap_or(0)
    }

    pub fn insert(&mut self, id: u64, vector: &[f32]) {
        self.rows.insert(id, self.ids.len());
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
    }

    fn row(&self, id: u64) -> Option<&[f32]> {
        let dim = self.dim();
        self.rows.get(&id).map(|&r| &self.vectors[r * dim..(r + 1) * dim])
    }

    /// Moves the last row into the removed one's place.
    fn remove(&mut self, id: u64) {
        let Some(row) = self.rows.remove(&id) else { return };
        let dim = self.dim();
        let last = self.ids.len() - 1;
        if row != last {
            self.vectors.copy_within(last * dim..(last + 1) * dim, row * dim);
            self.ids[row] = self.ids[last];
            self.rows.insert(self.ids[row], row);
        }
        self.ids.pop();
        self.vectors.truncate(last * dim);
    }

    pub fn scan(&self, query: &[f32], min_similarity: f32) -> Vec<(u64, f32)> {
        let dim = self.dim();
        if dim == 0 {
            return Vec::new();
        }
        self.ids.iter().zip(self.vectors.chunks_exact(dim)).map(|(id, v)| (*id, dot(query, v))).filter(|(_, sim)| *sim >= min_similarity).collect()
    }
}

impl Graph {
    pub fn new(dim: usize) -> Result<Graph, IndexError> {
        Graph::from_flat(&Flat::default(), dim)
    }

    fn from_flat(flat: &Flat, dim: usize) -> Result<Graph, IndexError> {
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization: ScalarKind::F16,
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let graph = Graph { index: Index::new(&options).map_err(|e| IndexError(e.to_string()))?, slots: Slots::new(SLOTS) };
        graph.grow(flat.ids.len() + 1)?;
        for (id, v) in flat.ids.iter().zip(flat.vectors.chunks_exact(dim.max(1))) {
            graph.add(*id, v)?;
        }
        Ok(graph)
    }

    /// Room for at least `needed` vectors, doubling like a Vec would. Not while other calls
    /// run: a graph in a [`GroupIndex`] grows under its write lock.
    fn grow(&self, needed: usize) -> Result<(), IndexError> {
        if needed > self.index.capacity() {
            let capacity = (self.index.capacity() * 2).max(needed).max(GRAPH_FROM * 2);
            self.index.reserve_capacity_and_threads(capacity, SLOTS).map_err(|e| IndexError(e.to_string()))?;
        }
        Ok(())
    }

    /// Adds a vector; the caller has made room.
    fn add(&self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        self.slots.run(|| self.index.add(id, vector)).map_err(|e| IndexError(e.to_string()))
    }

    /// Adds a vector to a graph of its own (the cache bench's crossover).
    pub fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        self.grow(self.index.size() + 1)?;
        self.add(id, vector)
    }

    pub fn search(&self, query: &[f32], count: usize) -> Vec<(u64, f32)> {
        match self.slots.run(|| self.index.search(query, count)) {
            // The IP metric's distance is 1 - dot.
            Ok(m) => m.keys.into_iter().zip(m.distances).map(|(id, d)| (id, 1.0 - d)).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A counting semaphore: at most `n` callers inside [`Slots::run`] at once.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots { free: Mutex::new(n), freed: Condvar::new() }
    }

    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Held<'a>(&'a Slots);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                *unpoison(self.0.free.lock()) += 1;
                self.0.freed.notify_one();
            }
        }
        let mut free = unpoison(self.free.lock());
        while *free == 0 {
            free = unpoison(self.freed.wait(free));
        }
        *free -= 1;
        drop(free);
        let _held = Held(self);
        f()
    }
}

/// Inner product of unit vectors: cosine similarity (the head's vectorised dot product).
pub use vane_model::dot;

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors (xorshift), so the tests need no extra crate.
    pub fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn ids(found: &[(u64, f32)]) -> Vec<u64> {
        found.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let mut seed = 7;
        let (a, b) = (random_unit(&mut seed, 387), random_unit(&mut seed, 387));
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-5);
    }

    #[test]
    fn flat_and_graph_both_find_and_forget() {
        let mut seed = 1;
        let vectors: Vec<Vec<f32>> = (0..GRAPH_FROM + 500).map(|_| random_unit(&mut seed, 128)).collect();
        let index = GroupIndex::new();
        for (id, v) in vectors.iter().enumerate() {
            index.insert(id as u64, v).unwrap();
            if id == 10 {
                assert!(!index.is_graph());
                assert_eq!(ids(&index.search(&vectors[3], 1, 0.5)), [3]);
                index.remove(3);
                assert!(ids(&index.search(&vectors[3], 5, -1.0)).iter().all(|id| *id != 3), "removed from the flat scan");
                assert_eq!(index.vector(10).as_deref(), Some(&vectors[10][..]), "the moved row keeps its id");
            }
        }
        assert!(index.is_graph(), "promoted at GRAPH_FROM");
        assert_eq!(index.len(), GRAPH_FROM + 499);
        assert_eq!(ids(&index.search(&vectors[2000], 1, 0.5)), [2000]);
        let stored = index.vector(2000).unwrap();
        assert!(stored.iter().zip(&vectors[2000]).all(|(a, b)| (a - b).abs() < 1e-3), "f16 in the graph");
        index.remove(2000);
        assert!(ids(&index.search(&vectors[2000], 10, -1.0)).iter().all(|id| *id != 2000), "removed from the graph");
        assert_eq!(index.vector(2000), None);
        assert_eq!(ids(&index.search(&vectors[5], 1, 0.5)), [5], "flat rows carried into the graph");
        assert!(index.search(&vectors[5], 10, 0.5).len() == 1, "random vectors are far below 0.5");
    }
}
