//! Lookup latency of the Milvus cache backend at scale: `--entries` random unit vectors (384
//! dimensions, like the encoder's) in `--groups` cache groups (tenant x model x context), flushed
//! and indexed (HNSW), then `--lookups` semantic lookups through `MilvusCache::lookup` (top-k
//! search filtered by group and expiry), half near a stored entry (hits), half random (misses),
//! and as many exact-tier lookups. Needs a running Milvus (`make bench-milvus` starts one).
//!
//! `cargo run --release -p vane-cache --example milvus_bench -- --address http://127.0.0.1:19530 [--entries 100000] [--lookups 2000] [--groups 1] [--consistency bounded|session|strong]`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use milvus::v2::prelude::{ClientV2, ConnectConfig, DescribeIndexRequest, FlushRequest};
use vane_cache::metrics::Standalone;
use vane_cache::milvus::{MilvusCache, MilvusSettings};
use vane_cache::{Fingerprint, Partition, PromptKey};

const DIM: usize = 384;

/// splitmix64: reproducible vectors without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIM).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect();
        normalise(v)
    }
}

fn normalise(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let address: String = arg(&args, "--address", std::env::var("VANE_MILVUS_ADDR").unwrap_or_else(|_| "http://127.0.0.1:19530".into()));
    let entries: usize = arg(&args, "--entries", 100_000);
    let lookups: usize = arg(&args, "--lookups", 2_000);
    let groups: usize = arg(&args, "--groups", 1).max(1);
    let consistency = match arg(&args, "--consistency", "bounded".to_string()).as_str() {
        "session" => milvus::v2::ConsistencyLevel::Session,
        "strong" => milvus::v2::ConsistencyLevel::Strong,
        _ => milvus::v2::ConsistencyLevel::Bounded,
    };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let collection = format!("bench_{nanos}");
    let settings = MilvusSettings {
        address: address.clone(),
        collection: collection.clone(),
        consistency,
        timeout: Duration::from_secs(5),
        top_k: 5,
        ef: 64,
        dim: DIM,
    };
    let metrics = Standalone::default();
    let cache = MilvusCache::new(settings, 0.93, Duration::from_secs(3600), metrics.metrics.clone());
    cache.ready().await?;
    let partition = |i: usize| Partition { tenant: format!("tenant-{}", i % groups), model: "auto".into() };
    let fingerprint = Fingerprint::of("");

    let mut rng = Rng(42);
    let mut stored = Vec::new();
    let started = Instant::now();
    let batch = 2_000;
    for start in (0..entries).step_by(batch) {
        let rows: Vec<_> = (start..(start + batch).min(entries))
            .map(|i| {
                let v = rng.unit();
                if i % (entries / lookups.max(1)).max(1) == 0 {
                    stored.push((i, v.clone()));
                }
                (partition(i), fingerprint, format!("prompt {i}"), v, format!("{{\"answer\":{i}}}"))
            })
            .collect();
        cache.insert_many(rows, Instant::now()).await?;
    }
    let inserted = started.elapsed();
    println!("inserted {entries} entries in {groups} group(s): {:.1} s ({:.0} rows/s)", inserted.as_secs_f64(), entries as f64 / inserted.as_secs_f64());

    // Sealed and indexed, as a cache that has been running a while: growing segments are searched
    // without the HNSW index.
    let client = ClientV2::new(&ConnectConfig::new().uri(&address).rpc_timeout(Duration::from_secs(120))).await?;
    client.flush(FlushRequest::builder().collection_names([collection.clone()]).build()?).await?;
    let waited = Instant::now();
    loop {
        let described = client.describe_index(DescribeIndexRequest::builder().collection_name(&collection).build()?).await?;
        let index = described.indexes().first().ok_or_else(|| anyhow::anyhow!("no index"))?;
        if index.get_indexed_rows() >= entries as i64 && index.get_pending_rows() == 0 {
            break;
        }
        anyhow::ensure!(waited.elapsed() < Duration::from_secs(600), "index not built after 10 min: {index:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("flushed and indexed in {:.1} s", waited.elapsed().as_secs_f64());

    let mut semantic = Vec::with_capacity(lookups);
    let mut exact = Vec::with_capacity(lookups);
    let mut hits = 0;
    for n in 0..lookups {
        let (i, v) = &stored[n % stored.len()];
        let query = if n % 2 == 0 {
            // A near-duplicate of a stored entry: cosine ~0.99.
            normalise(v.iter().zip(rng.unit()).map(|(a, b)| a + 0.1 * b).collect())
        } else {
            rng.unit()
        };
        let t = Instant::now();
        let hit = cache.lookup(&partition(*i), fingerprint, &query, Instant::now(), |_| true).await;
        semantic.push(t.elapsed());
        hits += usize::from(hit.is_some());
        let t = Instant::now();
        let found = cache.lookup_exact(&partition(*i), fingerprint, PromptKey::of(&format!("prompt {i}")), Instant::now()).await;
        exact.push(t.elapsed());
        anyhow::ensure!(found.is_some(), "exact lookup of entry {i} missed");
    }
    let errors: Vec<String> = metrics.render().lines().filter(|l| l.starts_with("vane_cache_errors_total")).map(String::from).collect();
    anyhow::ensure!(errors.is_empty(), "milvus errors: {errors:?}");
    semantic.sort();
    exact.sort();
    println!(
        "semantic lookup (top-5, filtered, HNSW ef=64, {consistency:?}): p50 {:.2} ms  p99 {:.2} ms  ({lookups} lookups, {hits} hits; expected {})",
        percentile(&semantic, 0.5),
        percentile(&semantic, 0.99),
        lookups.div_ceil(2)
    );
    println!("exact lookup (query by id): p50 {:.2} ms  p99 {:.2} ms", percentile(&exact, 0.5), percentile(&exact, 0.99));
    client.drop_collection(milvus::v2::prelude::DropCollectionRequest::builder().collection_name(&collection).build()?).await?;
    Ok(())
}
