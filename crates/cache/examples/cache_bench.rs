//! The embedded semantic cache (`MemoryCache`) at scale: random unit 384-d vectors (the encoder's
//! size), lookup latency p50/p99 (one thread, through the public API: lock, group, index, entry)
//! and insert rate, for each size in two layouts:
//! - `spread`: entries over `--groups` (partition, fingerprint) groups, as with many tenants,
//!   models and system prompts;
//! - `one`: every entry in one group, the worst case (one big HNSW graph).
//!
//! Half the lookups are near copies of a stored prompt (cosine ≈ 0.96, a hit), half random (a
//! miss); `recall` is the share of the hit lookups that found their source entry.
//! `--crossover` also times a flat scan against an HNSW search at group sizes 256..8192, which
//! is how `GRAPH_FROM` was chosen, and searches one global 20k-vector graph with a group filter
//! (the design not taken) for groups of 10%, 1% and 0.1% of it. `--snapshot` also times writing the cache to a snapshot (in
//! the temp dir) and loading it into a fresh cache (which rebuilds the indexes).
//! `--concurrent N`: one group of N entries, and lookup latency from one thread measured three
//! times, for `--seconds` each: alone, while another thread inserts (each insert evicting the
//! oldest entry), and while another thread writes snapshots back to back.
//!
//! `cargo run --release -p vane-cache --example cache_bench -- [--sizes 10000,100000,1000000] [--groups 1000] [--lookups 2000] [--one-max N] [--crossover] [--snapshot] [--concurrent 100000 [--seconds 5]]`
//! (`--one-max`: the one-group layout only up to N entries: building one 1M-vector graph
//! through the cache's single lock takes tens of minutes on 2 cores).
//!
//! Uniform random vectors are the hard case for HNSW (no clusters, every distance alike), so
//! recall and latency on real prompt embeddings should be better, not worse.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
use vane_cache::index::{Flat, Graph, dot};
use vane_cache::memory::MemoryCache;
use vane_cache::{Fingerprint, Partition};

const DIM: usize = 384;
const THRESHOLD: f32 = 0.9;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIM).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect();
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// A vector at cosine ≈ 0.96 from `v`.
    fn near(&mut self, v: &[f32]) -> Vec<f32> {
        let noise = self.unit();
        let w: Vec<f32> = v.iter().zip(&noise).map(|(x, n)| x + 0.3 * n).collect();
        let n = dot(&w, &w).sqrt();
        w.into_iter().map(|x| x / n).collect()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).map_or(0, |kb| kb / 1024)
}

fn group(i: usize, groups: usize) -> (Partition, Fingerprint) {
    let g = i % groups;
    (Partition { tenant: format!("tenant-{}", g % 50), model: "auto".into() }, Fingerprint::of(&format!("system prompt {g}")))
}

fn run(size: usize, groups: usize, lookups: usize, snapshot: bool) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64 ^ (groups as u64) << 32);
    let cache = MemoryCache::new(THRESHOLD, Duration::from_secs(3600), size);
    let now = Instant::now();
    // Kept for the hit queries: every `stride`-th stored vector.
    let stride = (size / lookups).max(1);
    let mut kept = Vec::new();
    let started = Instant::now();
    for i in 0..size {
        let v = rng.unit();
        if i % stride == 0 && kept.len() < lookups / 2 {
            kept.push((i, v.clone()));
        }
        let (p, fp) = group(i, groups);
        cache.insert(p, fp, format!("prompt {i}"), v, format!("answer {i}").into_bytes(), now);
    }
    let insert_s = started.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(lookups);
    let (mut hits, mut found) = (0, 0);
    for (i, v) in &kept {
        // Interleave a hit and a miss.
        for query in [rng.near(v), rng.unit()] {
            let (p, fp) = group(*i, groups);
            let t = Instant::now();
            let hit = cache.lookup(&p, fp, &query, now, |_| true);
            times.push(t.elapsed());
            if let Some(h) = hit {
                hits += 1;
                found += usize::from(h.completion == format!("answer {i}").into_bytes());
            }
        }
    }
    times.sort();
    let snap = if snapshot { time_snapshot(&cache, now) } else { String::new() };
    let layout = if groups == 1 { "one".to_string() } else { format!("spread/{groups}") };
    println!(
        "{:>9} {:>11} {:>9.0} {:>9.0} {:>9.0} {:>7.3} {:>6} {:>10.0} {:>8} {snap}",
        size,
        layout,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
        found as f64 / kept.len() as f64,
        hits - found,
        size as f64 / insert_s,
        rss_mib()
    );
}

/// The alternative to one index per group: one global HNSW graph searched with a predicate on
/// the group. Recall = share of near copies whose source entry came back first.
fn filtered_global(total: usize) {
    println!("{:>7} {:>7} {:>10} {:>12} {:>12} {:>7}", "total", "groups", "group_size", "p50_us", "p99_us", "recall");
    let mut rng = Rng(11);
    let options = IndexOptions { dimensions: DIM, metric: MetricKind::IP, quantization: ScalarKind::F16, connectivity: 16, expansion_add: 128, expansion_search: 64, multi: false };
    let index = Index::new(&options).unwrap();
    index.reserve(total).unwrap();
    let vectors: Vec<Vec<f32>> = (0..total).map(|_| rng.unit()).collect();
    for (i, v) in vectors.iter().enumerate() {
        index.add(i as u64, v).unwrap();
    }
    for groups in [10, 100, 1000] {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..500 {
            let i = (rng.next() as usize) % total;
            let q = rng.near(&vectors[i]);
            let g = i % groups;
            let t = Instant::now();
            let m = index.filtered_search(&q, 8, |key| key as usize % groups == g).unwrap();
            times.push(t.elapsed());
            found += usize::from(m.keys.first() == Some(&(i as u64)));
        }
        times.sort();
        println!("{total:>7} {groups:>7} {:>10} {:>12.0} {:>12.0} {:>7.3}", total / groups, percentile(&times, 0.5), percentile(&times, 0.99), found as f64 / 500.0);
    }
}

/// Writes the cache to a snapshot and loads it into a fresh one: "save_ms load_ms MiB".
fn time_snapshot(cache: &MemoryCache, now: Instant) -> String {
    let path = std::env::temp_dir().join(format!("cache_bench-{}.snap", std::process::id()));
    let t = Instant::now();
    let saved = cache.save(&path, DIM, now).expect("snapshot written");
    let save_ms = t.elapsed().as_millis();
    let mib = std::fs::metadata(&path).map_or(0, |m| m.len() >> 20);
    let restored = MemoryCache::new(THRESHOLD, Duration::from_secs(3600), saved);
    let t = Instant::now();
    let loaded = restored.load(&path, DIM, now).expect("snapshot loaded");
    let load_ms = t.elapsed().as_millis();
    let _ = std::fs::remove_file(&path);
    assert_eq!((loaded, restored.len()), (saved, saved));
    format!("{save_ms:>8} {load_ms:>8} {mib:>9}")
}

/// Lookup latency while nothing else runs, while inserts run, while snapshots are written.
fn concurrent(size: usize, seconds: f64) {
    let mut rng = Rng(0xC0C0 ^ size as u64);
    let cache = MemoryCache::new(THRESHOLD, Duration::from_secs(3600), size);
    let now = Instant::now();
    let (p, fp) = group(0, 1);
    let mut kept = Vec::new();
    for i in 0..size {
        let v = rng.unit();
        if i % (size / 1000).max(1) == 0 {
            kept.push(v.clone());
        }
        cache.insert(p.clone(), fp, format!("prompt {i}"), v, format!("answer {i}").into_bytes(), now);
    }
    println!("{:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>14}", "entries", "during", "p50_us", "p99_us", "max_us", "lookups", "other_ops");
    let snapshot = std::env::temp_dir().join(format!("cache_bench-concurrent-{}.snap", std::process::id()));
    for during in ["nothing", "inserts", "snapshots"] {
        let stop = AtomicBool::new(false);
        let ops = AtomicUsize::new(0);
        let mut times = Vec::new();
        std::thread::scope(|s| {
            let (cache, stop, ops, snapshot, p) = (&cache, &stop, &ops, &snapshot, &p);
            s.spawn(move || {
                let mut rng = Rng(0xBEEF);
                let mut i = size;
                while during != "nothing" && !stop.load(Ordering::Relaxed) {
                    if during == "inserts" {
                        cache.insert(p.clone(), fp, format!("prompt {i}"), rng.unit(), format!("answer {i}").into_bytes(), now);
                        i += 1;
                    } else {
                        cache.save(snapshot, DIM, now).expect("snapshot written");
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            });
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed().as_secs_f64() < seconds {
                let query = if n % 2 == 0 { rng.near(&kept[(n / 2) % kept.len()]) } else { rng.unit() };
                let t = Instant::now();
                std::hint::black_box(cache.lookup(p, fp, &query, now, |_| true));
                times.push(t.elapsed());
                n += 1;
            }
            stop.store(true, Ordering::Relaxed);
        });
        times.sort();
        let other = match during {
            "inserts" => format!("{} inserts", ops.into_inner()),
            "snapshots" => format!("{} snapshots", ops.into_inner()),
            _ => String::new(),
        };
        println!("{size:>9} {during:>9} {:>9.0} {:>9.0} {:>9.0} {:>8} {other:>14}", percentile(&times, 0.5), percentile(&times, 0.99), percentile(&times, 1.0), times.len());
    }
    let _ = std::fs::remove_file(&snapshot);
}

/// Flat scan against HNSW search at growing group sizes, one group.
fn crossover() {
    println!("{:>6} {:>12} {:>12}", "group", "flat_p50_us", "hnsw_p50_us");
    let mut rng = Rng(7);
    for n in [256, 512, 1024, 2048, 4096, 8192] {
        let mut flat = Flat::default();
        let mut graph = Graph::new(DIM).unwrap();
        let vectors: Vec<Vec<f32>> = (0..n).map(|_| rng.unit()).collect();
        for (i, v) in vectors.iter().enumerate() {
            flat.insert(i as u64, v);
            graph.insert(i as u64, v).unwrap();
        }
        let queries: Vec<Vec<f32>> = (0..500).map(|i| rng.near(&vectors[i % n])).collect();
        let time = |f: &dyn Fn(&[f32])| {
            let mut t: Vec<Duration> = queries
                .iter()
                .map(|q| {
                    let s = Instant::now();
                    f(q);
                    s.elapsed()
                })
                .collect();
            t.sort();
            percentile(&t, 0.5)
        };
        let f = time(&|q| drop(std::hint::black_box(flat.scan(q, THRESHOLD))));
        let g = time(&|q| drop(std::hint::black_box(graph.search(q, 8))));
        println!("{n:>6} {f:>12.1} {g:>12.1}");
    }
}

fn main() {
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    let (mut groups, mut lookups, mut cross, mut one_max, mut snapshot) = (1000, 2000, false, usize::MAX, false);
    let (mut concurrent_size, mut seconds) = (None, 5.0);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sizes" => sizes = args.next().expect("--sizes 10000,100000").split(',').map(|s| s.parse().expect("a number")).collect(),
            "--groups" => groups = args.next().and_then(|s| s.parse().ok()).expect("--groups N"),
            "--lookups" => lookups = args.next().and_then(|s| s.parse().ok()).expect("--lookups N"),
            "--crossover" => cross = true,
            "--snapshot" => snapshot = true,
            "--one-max" => one_max = args.next().and_then(|s| s.parse().ok()).expect("--one-max N"),
            "--concurrent" => concurrent_size = Some(args.next().and_then(|s| s.parse().ok()).expect("--concurrent N")),
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds S"),
            other => panic!("unknown argument {other}"),
        }
    }
    if let Some(size) = concurrent_size {
        return concurrent(size, seconds);
    }
    if cross {
        crossover();
        filtered_global(20_000);
    }
    let snap_columns = if snapshot { format!("{:>8} {:>8} {:>9}", "save_ms", "load_ms", "snap_mib") } else { String::new() };
    println!("{:>9} {:>11} {:>9} {:>9} {:>9} {:>7} {:>6} {:>10} {:>8} {snap_columns}", "entries", "layout", "p50_us", "p99_us", "max_us", "recall", "wrong", "inserts/s", "rss_mib");
    for &size in &sizes {
        run(size, groups, lookups, snapshot);
        if size <= one_max {
            run(size, 1, lookups, snapshot);
        }
    }
}
