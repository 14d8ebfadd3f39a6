//! What the jailbreak windows cost: Route latency of one prompt by the number of windows it
//! needs, and the latency of short prompts while other callers flood long ones. The data behind
//! `safety.jailbreak.max_windows` and `deadline_ms` (README, "Jailbreak budget").
//!
//! `cargo run --release -p vane-sidecar --example jailbreak_bench -- [--config config/vane.yaml]
//! [--windows 16,32,64,128,256] [--reps 30] [--flood 4] [--seconds 5]`
//!
//! The sweep lifts the budget and the deadline so every window is embedded; the flood runs the
//! configuration as it is (its `max_windows`, `deadline_ms` and `oversize`), with prompts that
//! fit the budget, and counts how the long ones ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vane_model::batching::{BatchPolicy, EmbedQueue};
use vane_sidecar::config::Config;
use vane_sidecar::metrics::Metrics;
use vane_model::onnx::OnnxEncoder;
use vane_sidecar::pipeline::Pipeline;
use vane_routing::jailbreak::{FIRST_WINDOW_WORDS, STRIDE_WORDS, WINDOW_WORDS};
use vane_proto::v1::route_decision::Action;
use vane_proto::v1::RouteRequest;

const SENTENCES: [&str; 8] = [
    "The harbour town woke slowly that morning.",
    "Fishermen carried their nets down to the boats.",
    "Gulls circled above the market and the baker opened her shutters.",
    "A tram rattled past the old customs house.",
    "Clouds gathered over the hills to the west.",
    "The ferry sounded its horn twice before leaving.",
    "Market stalls sold apples, cheese and fresh fish.",
    "Lamps were lit one by one along the quay.",
];

/// Harmless text of `words` words, distinct per `seed` (no window repeats another).
fn prose(words: usize, seed: usize) -> String {
    let mut out = Vec::with_capacity(words);
    let mut i = seed.wrapping_mul(2_654_435_761);
    while out.len() < words {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        out.extend(SENTENCES[(i >> 33) % SENTENCES.len()].split(' ').map(str::to_string));
        out.push(format!("({})", i >> 40));
    }
    out.truncate(words);
    out.join(" ")
}

/// Words for a prompt that needs `windows` windows beyond the shared embedding.
fn words_for(windows: usize) -> usize {
    if windows == 0 { 20 } else { (WINDOW_WORDS + (windows - 1) * STRIDE_WORDS).max(FIRST_WINDOW_WORDS + 1) }
}

fn request(prompt: String, tenant: &str) -> RouteRequest {
    RouteRequest { model: "general-model".into(), prompt, context: "{}".into(), tenant: tenant.into(), cache_control: 2, ..Default::default() }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.into())
}

async fn router(config: &Config) -> anyhow::Result<Arc<Pipeline>> {
    let metrics = Metrics::default();
    let queue = EmbedQueue::start_many(OnnxEncoder::load_all(&config.model)?, BatchPolicy::from_config(&config.model), metrics.encoder.clone());
    Ok(Arc::new(Pipeline::build(config, queue, metrics).await?))
}

fn outcome(d: &vane_proto::v1::RouteDecision) -> String {
    match &d.action {
        Some(Action::Block(b)) => b.code.clone(),
        Some(Action::Forward(f)) if f.jailbreak.is_some() => "forward_flagged".into(),
        Some(Action::Forward(_)) => "forward".into(),
        Some(Action::Cached(_)) => "cached".into(),
        None => "none".into(),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let config_path = arg("--config", "config/vane.yaml");
    let windows: Vec<usize> = arg("--windows", "0,16,32,64,128,256").split(',').map(str::parse).collect::<Result<_, _>>()?;
    let reps: usize = arg("--reps", "30").parse()?;
    let flood: usize = arg("--flood", "4").parse()?;
    let seconds: f64 = arg("--seconds", "5").parse()?;
    let config = Config::load(std::path::Path::new(&config_path))?;
    let jb = config.safety.jailbreak.clone().ok_or_else(|| anyhow::anyhow!("{config_path} has no safety.jailbreak"))?;
    println!("encoders {}, threads {}, max_batch {}; config max_windows {}, deadline_ms {}, oversize {:?}", config.model.encoders, config.model.threads, config.model.max_batch, jb.max_windows, jb.deadline_ms, jb.oversize);

    let mut unbounded = config.clone();
    if let Some(j) = &mut unbounded.safety.jailbreak {
        (j.max_windows, j.deadline_ms) = (100_000, 60_000);
    }
    let r = router(&unbounded).await?;
    for i in 0..20 {
        r.route(request(prose(400, 1_000_000 + i), "warm")).await?; // warm up
    }
    println!("\n| windows | words | Route p50 ms | p99 ms | ms per window (p50) |\n|---|---|---|---|---|");
    for &w in &windows {
        let mut times = Vec::new();
        for i in 0..reps {
            let req = request(prose(words_for(w), w * 10_000 + i), "sweep");
            let t0 = Instant::now();
            r.route(req).await?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
        let per = if w == 0 { String::from("-") } else { format!("{:.2}", p50 / w as f64) };
        println!("| {w} | {} | {p50:.1} | {p99:.1} | {per} |", words_for(w));
    }
    drop(r);

    // The flood: `flood` callers send prompts just inside the budget, one caller short ones.
    let r = router(&config).await?;
    let long_words = words_for(jb.max_windows.min(100_000));
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..flood {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let (mut outcomes, mut times) = (std::collections::BTreeMap::<String, usize>::new(), Vec::new());
            let mut i = 0;
            while Instant::now() < stop {
                let t0 = Instant::now();
                let d = r.route(request(prose(long_words, 5_000_000 + c * 100_000 + i), "flood")).await;
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                *outcomes.entry(d.map_or_else(|e| format!("error: {e}"), |d| outcome(&d))).or_default() += 1;
                i += 1;
            }
            (outcomes, times)
        }));
    }
    let mut short = Vec::new();
    let mut i = 0;
    tokio::time::sleep(Duration::from_millis(200)).await;
    while Instant::now() < stop {
        let t0 = Instant::now();
        r.route(request(format!("Question {i}: what is the capital of Peru?"), "short")).await?;
        short.push(t0.elapsed().as_secs_f64() * 1e3);
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut outcomes, mut long) = (std::collections::BTreeMap::<String, usize>::new(), Vec::new());
    for t in tasks {
        let (o, times) = t.await?;
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
        long.extend(times);
    }
    println!("\nflood: {flood} callers x {long_words}-word prompts ({} windows) for {seconds} s, 1 caller short prompts", jb.max_windows);
    println!("short prompts: {} Routes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", short.len(), pct(&mut short, 0.5), pct(&mut short, 0.99), pct(&mut short, 1.0));
    println!("long prompts: {} Routes, p50 {:.1} ms, p99 {:.1} ms, outcomes {outcomes:?}", long.len(), pct(&mut long, 0.5), pct(&mut long, 0.99));
    Ok(())
}
