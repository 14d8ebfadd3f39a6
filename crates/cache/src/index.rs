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

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Group size at which the flat scan gives way to the graph: where they cost the same
/// (`cache_bench --crossover`: 51 µs flat against 50 µs HNSW at 2048 vectors of 384-d).
pub const GRAPH_FROM: usize = 2048;

/// HNSW parameters (USearch's defaults): 16 links per node, beams of 128 when adding and 64
/// when searching.
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 128;
const EXPANSION_SEARCH: usize = 64;

pub enum GroupIndex {
    Flat(Flat),
    Graph(Graph),
}

#[derive(Default)]
pub struct Flat {
    ids: Vec<u64>,
    /// Row `i` is the vector of `ids[i]`.
    vectors: Vec<f32>,
    rows: HashMap<u64, usize>,
}

pub struct Graph {
    index: Index,
}

#[derive(Debug, thiserror::Error)]
#[error("vector index: {0}")]
pub struct IndexError(String);

impl GroupIndex {
    pub fn new() -> GroupIndex {
        GroupIndex::Flat(Flat::default())
    }

    pub fn len(&self) -> usize {
        match self {
            GroupIndex::Flat(f) => f.ids.len(),
            GroupIndex::Graph(g) => g.index.size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        if let GroupIndex::Flat(flat) = self {
            if !flat.ids.is_empty() && flat.dim() != vector.len() {
                return Err(IndexError(format!("{}-d vector in a {}-d group", vector.len(), flat.dim())));
            }
            if flat.ids.len() + 1 < GRAPH_FROM {
                flat.insert(id, vector);
                return Ok(());
            }
            *self = GroupIndex::Graph(Graph::from_flat(flat, vector.len())?);
        }
        match self {
            GroupIndex::Graph(g) => g.insert(id, vector),
            GroupIndex::Flat(_) => unreachable!("promoted above"),
        }
    }

    pub fn remove(&mut self, id: u64) {
        match self {
            GroupIndex::Flat(f) => f.remove(id),
            GroupIndex::Graph(g) => {
                // Removing a key the graph holds cannot fail; a key it does not hold is a no-op.
                let _ = g.index.remove(id);
            }
        }
    }

    /// Up to `count` (id, similarity) pairs at or above `min_similarity`, most similar first.
    /// Exact for a flat group, approximate (HNSW) for a graph.
    pub fn search(&self, query: &[f32], count: usize, min_similarity: f32) -> Vec<(u64, f32)> {
        let mut found = match self {
            GroupIndex::Flat(f) => f.scan(query, min_similarity),
            GroupIndex::Graph(g) => g.search(query, count),
        };
        found.retain(|(_, sim)| *sim >= min_similarity);
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(count);
        found
    }

    /// The stored vector of `id` (for snapshots).
    pub fn vector(&self, id: u64) -> Option<Vec<f32>> {
        match self {
            GroupIndex::Flat(f) => f.row(id).map(<[f32]>::to_vec),
            GroupIndex::Graph(g) => {
                let mut out = Vec::new();
                g.index.export(id, &mut out).ok().filter(|n| *n == 1).map(|_| out)
            }
        }
    }
}

impl Default for GroupIndex {
    fn default() -> Self {
        GroupIndex::new()
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
        let mut graph = Graph { index: Index::new(&options).map_err(|e| IndexError(e.to_string()))? };
        for (id, v) in flat.ids.iter().zip(flat.vectors.chunks_exact(dim.max(1))) {
            graph.insert(*id, v)?;
        }
        Ok(graph)
    }

    pub fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), IndexError> {
        // USearch needs room reserved ahead of insertion; double it like a Vec would.
        if self.index.size() >= self.index.capacity() {
            self.index.reserve((self.index.capacity() * 2).max(GRAPH_FROM * 2)).map_err(|e| IndexError(e.to_string()))?;
        }
        self.index.add(id, vector).map_err(|e| IndexError(e.to_string()))
    }

    pub fn search(&self, query: &[f32], count: usize) -> Vec<(u64, f32)> {
        match self.index.search(query, count) {
            // The IP metric's distance is 1 - dot.
            Ok(m) => m.keys.into_iter().zip(m.distances).map(|(id, d)| (id, 1.0 - d)).collect(),
            Err(_) => Vec::new(),
        }
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
        let mut index = GroupIndex::new();
        for (id, v) in vectors.iter().enumerate() {
            index.insert(id as u64, v).unwrap();
            if id == 10 {
                assert!(matches!(index, GroupIndex::Flat(_)));
                assert_eq!(ids(&index.search(&vectors[3], 1, 0.5)), [3]);
                index.remove(3);
                assert!(ids(&index.search(&vectors[3], 5, -1.0)).iter().all(|id| *id != 3), "removed from the flat scan");
                assert_eq!(index.vector(10).as_deref(), Some(&vectors[10][..]), "the moved row keeps its id");
            }
        }
        assert!(matches!(index, GroupIndex::Graph(_)), "promoted at GRAPH_FROM");
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
