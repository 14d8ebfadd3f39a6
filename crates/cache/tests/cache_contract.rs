//! One contract, two cache backends: every case runs against the embedded backend and against a
//! real Milvus. The Milvus half is `#[ignore]`d here because it needs a server:
//! tests/test_milvus_contract.py (part of `make test`) starts Milvus 2.3.5 and runs it with
//! `VANE_MILVUS_ADDR` set and `--include-ignored`; run that way without the variable it fails.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vane_cache::backend::CacheBackend;
use vane_cache::config::{Backend, CacheConfig, Consistency};
use vane_cache::metrics::Standalone;
use vane_cache::{CacheError, Fingerprint, Partition, PromptKey, Selector, Tier};

const DIM: usize = 4;

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Milvus,
}

struct Cache {
    backend: CacheBackend,
    metrics: Standalone,
}

impl Drop for Cache {
    /// Milvus errors are answered as misses, so a case could pass on a broken backend: none may occur.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let errors: Vec<String> = self.metrics.render().lines().filter(|l| l.starts_with("vane_cache_errors_total")).map(String::from).collect();
            let last = match &self.backend {
                CacheBackend::Milvus(m) => m.last_error(),
                CacheBackend::Memory(_) => None,
            };
            assert!(errors.is_empty(), "cache backend errors: {errors:?}, the last: {last:?}");
        }
    }
}

async fn cache(kind: Kind, case: &str, threshold: f32, ttl_seconds: u64) -> Cache {
    cache_with(kind, case, CacheConfig { threshold, ttl_seconds, max_entries: 100, ..CacheConfig::default() }).await
}

async fn cache_with(kind: Kind, case: &str, mut config: CacheConfig) -> Cache {
    let metrics = Standalone::default();
    if let Kind::Milvus = kind {
        let address = std::env::var("VANE_MILVUS_ADDR").expect("VANE_MILVUS_ADDR (a running Milvus) is required: run tests/test_milvus_contract.py");
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        config.backend = Backend::Milvus;
        config.milvus.address = address;
        // The contract is about what is found, not how fast (a loaded 2-core CI machine is
        // slow), and every case reads its own writes at once: session consistency.
        config.milvus.timeout_ms = 2_000;
        config.milvus.consistency = Consistency::Session;
        config.milvus.collection = format!("contract_{case}_{nanos}");
    }
    let backend = CacheBackend::build(&config, config.threshold, DIM, &metrics.metrics);
    if let CacheBackend::Milvus(m) = &backend {
        m.ready().await.expect("milvus ready");
    }
    Cache { backend, metrics }
}

fn p(tenant: &str, model: &str) -> Partition {
    Partition { tenant: tenant.into(), model: model.into() }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    v.resize(DIM, 0.0);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

impl Cache {
    async fn put(&self, partition: Partition, fp: Fingerprint, text: &str, v: &[f32], answer: &str, now: Instant) {
        self.backend.insert(partition, fp, text.into(), Some(unit(v)), answer.as_bytes().to_vec(), now).await.expect("stored");
    }

    async fn answer(&self, partition: &Partition, fp: Fingerprint, v: &[f32], now: Instant) -> Option<String> {
        self.backend.lookup(partition, fp, &unit(v), now, |_| true).await.map(|h| String::from_utf8(h.completion).unwrap())
    }
}

async fn hits_only_above_threshold_within_partition_and_fingerprint(kind: Kind) {
    let c = cache(kind, "threshold", 0.9, 60).await;
    let now = Instant::now();
    let fp = Fingerprint::of("ctx");
    c.put(p("a", "auto"), fp, "q", &[1.0, 0.0], "answer", now).await;
    let hit = c.backend.lookup(&p("a", "auto"), fp, &unit(&[1.0, 0.1]), now, |_| true).await.expect("hit");
    assert_eq!((hit.tier, hit.completion.as_slice()), (Tier::Semantic, &b"answer"[..]));
    assert!(hit.similarity > 0.99, "{}", hit.similarity);
    assert_eq!(c.answer(&p("a", "auto"), fp, &[1.0, 1.0], now).await, None, "0.707 < 0.9");
    assert_eq!(c.answer(&p("b", "auto"), fp, &[1.0, 0.0], now).await, None, "other tenant");
    assert_eq!(c.answer(&p("a", "gpt"), fp, &[1.0, 0.0], now).await, None, "other model");
    assert_eq!(c.answer(&p("a", "auto"), Fingerprint::of("other"), &[1.0, 0.0], now).await, None, "other context");
}

async fn exact_tier_matches_the_same_prompt_only_and_keeps_the_newest(kind: Kind) {
    let c = cache(kind, "exact", 0.9, 10).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    c.put(p("t", "m"), fp, "2+2?", &[1.0, 0.0], "old", now).await;
    c.put(p("t", "m"), fp, "2+2?", &[1.0, 0.0], "new", now).await;
    let hit = c.backend.lookup_exact(&p("t", "m"), fp, PromptKey::of(" 2+2? "), now).await.expect("exact hit");
    assert_eq!((hit.tier, hit.completion.as_slice(), hit.similarity), (Tier::Exact, &b"new"[..], 1.0));
    assert_eq!(c.answer(&p("t", "m"), fp, &[1.0, 0.0], now).await.as_deref(), Some("new"), "the re-answered prompt replaced its entry");
    assert!(c.backend.lookup_exact(&p("u", "m"), fp, PromptKey::of("2+2?"), now).await.is_none(), "other tenant");
    assert!(c.backend.lookup_exact(&p("t", "m"), Fingerprint::of("x"), PromptKey::of("2+2?"), now).await.is_none(), "other context");
    assert!(c.backend.lookup_exact(&p("t", "m"), fp, PromptKey::of("2+3?"), now).await.is_none());
    assert!(c.backend.lookup_exact(&p("t", "m"), fp, PromptKey::of("2+2?"), now + Duration::from_secs(11)).await.is_none(), "expired");
}

/// A prompt the encoder could not read is stored without a semantic key: its identical repeat
/// is an exact hit, and no lookup by vector finds it, not even with the lowest threshold.
async fn an_entry_without_embedding_serves_the_exact_tier_only(kind: Kind) {
    let c = cache(kind, "exact_only", 0.01, 60).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    c.backend.insert(p("t", "m"), fp, "秦朝是哪一年建立的？".into(), None, b"qin".to_vec(), now).await.expect("stored");
    let hit = c.backend.lookup_exact(&p("t", "m"), fp, PromptKey::of("秦朝是哪一年建立的？"), now).await.expect("exact hit");
    assert_eq!((hit.tier, hit.completion.as_slice()), (Tier::Exact, &b"qin"[..]));
    for v in [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]] {
        assert!(c.backend.lookup(&p("t", "m"), fp, &unit(&v), now, |_| true).await.is_none(), "found by vector {v:?}");
    }
}

async fn rejected_candidates_give_way_to_the_next_best(kind: Kind) {
    let c = cache(kind, "guard", 0.5, 60).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    c.put(p("", "m"), fp, "near", &[1.0, 0.05], "near", now).await;
    c.put(p("", "m"), fp, "far", &[1.0, 0.5], "far", now).await;
    let mut seen = Vec::new();
    let (partition, query) = (p("", "m"), unit(&[1.0, 0.0]));
    let hit = c.backend.lookup(&partition, fp, &query, now, |text| {
        seen.push(text.to_string());
        text != "near"
    });
    assert_eq!(hit.await.expect("the next candidate").completion, b"far");
    assert_eq!(seen, ["near", "far"], "candidates are offered most similar first");
    assert!(c.backend.lookup(&p("", "m"), fp, &unit(&[1.0, 0.0]), now, |_| false).await.is_none());
}

async fn the_most_similar_entry_wins(kind: Kind) {
    let c = cache(kind, "nearest", 0.5, 60).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    c.put(p("", "m"), fp, "far", &[1.0, 0.5], "far", now).await;
    c.put(p("", "m"), fp, "near", &[1.0, 0.05], "near", now).await;
    c.put(p("", "m"), fp, "other", &[0.0, 1.0], "other", now).await;
    assert_eq!(c.answer(&p("", "m"), fp, &[1.0, 0.0], now).await.as_deref(), Some("near"));
    assert_eq!(c.answer(&p("", "m"), fp, &[0.0, 1.0], now).await.as_deref(), Some("other"));
}

async fn entries_expire(kind: Kind) {
    let c = cache(kind, "ttl", 0.9, 10).await;
    let t0 = Instant::now();
    let fp = Fingerprint::of("");
    c.put(p("", "m"), fp, "1", &[1.0, 0.0], "1", t0).await;
    c.put(p("", "m"), fp, "2", &[0.0, 1.0], "2", t0 + Duration::from_secs(5)).await;
    let later = t0 + Duration::from_secs(11);
    assert_eq!(c.answer(&p("", "m"), fp, &[1.0, 0.0], later).await, None, "expired");
    assert_eq!(c.answer(&p("", "m"), fp, &[0.0, 1.0], later).await.as_deref(), Some("2"), "still live");
    if let CacheBackend::Milvus(m) = &c.backend {
        // The cleanup deletes what expired by then: even a lookup at t0 no longer finds it. (On
        // 2.3.5 a delete is not part of the session's guarantee: it shows within moments.)
        assert!(m.cleanup(later).await);
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.answer(&p("", "m"), fp, &[1.0, 0.0], t0).await.is_some() {
            assert!(Instant::now() < deadline, "not deleted by the cleanup");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(c.answer(&p("", "m"), fp, &[0.0, 1.0], t0).await.as_deref(), Some("2"), "live entries kept");
    }
}

async fn tenants_and_models_are_isolated(kind: Kind) {
    let c = cache(kind, "isolation", 0.9, 60).await;
    let now = Instant::now();
    let fp = Fingerprint::of("sys: be brief");
    for (tenant, model) in [("acme", "auto"), ("globex", "auto"), ("acme", "gpt")] {
        c.put(p(tenant, model), fp, "same prompt", &[1.0, 0.0], &format!("{tenant}/{model}"), now).await;
    }
    for (tenant, model) in [("acme", "auto"), ("globex", "auto"), ("acme", "gpt")] {
        let want = format!("{tenant}/{model}");
        assert_eq!(c.answer(&p(tenant, model), fp, &[1.0, 0.0], now).await, Some(want.clone()), "semantic");
        let exact = c.backend.lookup_exact(&p(tenant, model), fp, PromptKey::of("same prompt"), now).await.expect("exact");
        assert_eq!(exact.completion, want.as_bytes(), "exact");
    }
    assert_eq!(c.answer(&p("initech", "auto"), fp, &[1.0, 0.0], now).await, None);
}

async fn invalidation_removes_what_the_selector_matches(kind: Kind) {
    let c = cache(kind, "invalidation", 0.9, 60).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    let entries = [("acme", "auto", "q1", 1.0), ("acme", "gpt", "q1", 2.0), ("acme", "auto", "q2", 3.0), ("globex", "auto", "q1", 4.0)];
    for (tenant, model, prompt, axis) in entries {
        c.put(p(tenant, model), fp, prompt, &[axis, 1.0], &format!("{tenant}/{model}/{prompt}"), now).await;
    }
    let live = async |tenant: &str, model: &str, prompt: &str| c.backend.lookup_exact(&p(tenant, model), fp, PromptKey::of(prompt), now).await;
    // Milvus applies deletes asynchronously, even for session reads: removed entries may answer
    // for a moment (the embedded backend: never).
    let gone = async |tenant: &str, model: &str, prompt: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while live(tenant, model, prompt).await.is_some() {
            assert!(Instant::now() < deadline, "{tenant}/{model}/{prompt} still answers 5 s after its invalidation");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let selector = |json: &str| serde_json::from_str::<Selector>(json).unwrap();
    assert_eq!(c.backend.stats().await.expect("stats")["entries"], 4);

    // By id: the one a hit reported.
    let id = live("acme", "gpt", "q1").await.expect("stored").id;
    assert_eq!(c.backend.invalidate(&selector(&format!(r#"{{"id": {id}}}"#))).await, Ok(1));
    gone("acme", "gpt", "q1").await;
    // By prompt and model, whitespace aside.
    assert_eq!(c.backend.invalidate(&selector(r#"{"prompt": " q2 ", "model": "auto"}"#)).await, Ok(1));
    gone("acme", "auto", "q2").await;
    assert!(live("acme", "auto", "q1").await.is_some(), "another prompt stays");
    // By tenant: only that tenant's.
    assert_eq!(c.backend.invalidate(&selector(r#"{"tenant": "acme"}"#)).await, Ok(1));
    gone("acme", "auto", "q1").await;
    assert!(live("globex", "auto", "q1").await.is_some(), "another tenant stays");
    assert_eq!(c.backend.invalidate(&selector(r#"{"tenant": "initech"}"#)).await, Ok(0));
    // Empty: everything.
    assert_eq!(c.backend.invalidate(&Selector::default()).await, Ok(1));
    gone("globex", "auto", "q1").await;
}

/// `cache.max_entry_bytes` holds for both backends (Milvus owns its storage, not what we send).
async fn entries_over_max_entry_bytes_are_not_stored(kind: Kind) {
    let c = cache_with(kind, "entry_cap", CacheConfig { threshold: 0.9, max_entry_bytes: 8 << 10, ..CacheConfig::default() }).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    let big = "x".repeat(10 << 10);
    assert_eq!(c.backend.insert(p("", "m"), fp, "big answer".into(), Some(unit(&[1.0, 0.0])), big.clone().into_bytes(), now).await.map_err(|e| e.reason()), Err("too_large"));
    assert_eq!(c.backend.insert(p("", "m"), fp, big.clone(), Some(unit(&[0.0, 1.0])), b"a".to_vec(), now).await.map_err(|e| e.reason()), Err("too_large"), "a prompt counts too");
    c.put(p("", "m"), fp, "small answer", &[1.0, 0.1], &"y".repeat(4 << 10), now).await;
    assert_eq!(c.answer(&p("", "m"), fp, &[1.0, 0.0], now).await.map(|a| a.len()), Some(4 << 10));
    assert!(c.backend.lookup_exact(&p("", "m"), fp, PromptKey::of(&big), now).await.is_none());
    assert_eq!(c.backend.stats().await.expect("stats")["entries"], 1);
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Kind::Memory).await
            })*
        }
        mod milvus {
            $(#[tokio::test]
            #[ignore = "needs a Milvus server: run by tests/test_milvus_contract.py"]
            async fn $case() {
                super::$case(super::Kind::Milvus).await
            })*
        }
    };
}

contract!(
    hits_only_above_threshold_within_partition_and_fingerprint,
    exact_tier_matches_the_same_prompt_only_and_keeps_the_newest,
    an_entry_without_embedding_serves_the_exact_tier_only,
    rejected_candidates_give_way_to_the_next_best,
    the_most_similar_entry_wins,
    entries_expire,
    tenants_and_models_are_isolated,
    invalidation_removes_what_the_selector_matches,
    entries_over_max_entry_bytes_are_not_stored,
);

/// The embedded backend alone bounds its memory (a Milvus server owns its storage).
#[tokio::test]
async fn memory_stays_within_max_bytes() {
    let config = CacheConfig { threshold: 0.9, max_entries: 1000, max_bytes: 64 << 10, max_entry_bytes: 16 << 10, ..CacheConfig::default() };
    let c = cache_with(Kind::Memory, "max_bytes", config).await;
    let now = Instant::now();
    let fp = Fingerprint::of("");
    for i in 0..20 {
        c.put(p("", "m"), fp, &format!("q{i}"), &[1.0, i as f32], &"z".repeat(10 << 10), now).await;
        let bytes = c.backend.stats().await.expect("stats")["bytes"].as_u64().unwrap();
        assert!(bytes <= 64 << 10, "{bytes} bytes after {i}");
    }
    let entries = c.backend.stats().await.expect("stats")["entries"].as_u64().unwrap();
    assert!((5..=6).contains(&entries), "about 64 KiB / 10 KiB entries kept: {entries}");
    assert!(c.backend.lookup_exact(&p("", "m"), fp, PromptKey::of("q19"), now).await.is_some(), "the newest stays");
    assert!(c.backend.lookup_exact(&p("", "m"), fp, PromptKey::of("q0"), now).await.is_none(), "the oldest left");
    let gauge = format!("vane_cache_bytes {}\n", c.backend.stats().await.expect("stats")["bytes"]);
    assert!(c.metrics.render().contains(&gauge), "{gauge}");
}

/// No server at all: every call is a counted error answered as a miss or a skipped store.
#[tokio::test]
async fn milvus_unreachable_fails_open_and_counts_errors() {
    let metrics = Standalone::default();
    let mut config = CacheConfig { backend: Backend::Milvus, ..CacheConfig::default() };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.milvus.address = format!("http://{closed}");
    config.milvus.timeout_ms = 500;
    let backend = CacheBackend::build(&config, config.threshold, DIM, &metrics.metrics);
    let now = Instant::now();
    let fp = Fingerprint::of("");
    let started = Instant::now();
    assert!(backend.lookup_exact(&p("t", "m"), fp, PromptKey::of("q"), now).await.is_none());
    assert!(backend.lookup(&p("t", "m"), fp, &unit(&[1.0]), now, |_| true).await.is_none());
    assert_eq!(backend.insert(p("t", "m"), fp, "q".into(), Some(unit(&[1.0])), b"a".to_vec(), now).await.map_err(|e| e.reason()), Err("backend_error"));
    assert!(started.elapsed() < Duration::from_secs(2), "no call waits for the (background) reconnect: {:?}", started.elapsed());
    let text = metrics.render();
    for op in ["lookup_exact", "lookup", "insert"] {
        assert!(text.contains(&format!("vane_cache_errors_total{{backend=\"milvus\",op=\"{op}\"}} 1")), "{op} not counted:\n{text}");
    }
    assert!(matches!(backend.insert(p("t", "m"), fp, "q".into(), Some(unit(&[1.0])), vec![b'x'; 70_000], now).await, Err(CacheError::TooLarge)));
}
