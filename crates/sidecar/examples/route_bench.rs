//! Load test of the Route RPC: the real sidecar (encoder, heads, cache) served over loopback TCP,
//! called by N concurrent gRPC clients with distinct short prompts (every call is a cache miss
//! that runs the encoder and the routing decision).
//!
//! `cargo run --release -p vane-sidecar --example route_bench -- [--config config/vane.yaml] [--models int8,fp32] [--seconds 5] [--callers 1,16,128] [--encoders N] [--batching on,off] [--tracing] [--encoder-only]`
//! prints one row per (model, batching, callers): p50/p99 latency and the sustained rate.
//! Logging is installed as in the sidecar; `--tracing` also exports every trace (sampling 1.0)
//! to the collector the `OTEL_EXPORTER_OTLP_*` variables name (default 127.0.0.1:4317).
//! `--encoder-only`: the same prompts and callers straight into the encoder queue (no gRPC, no
//! heads, no cache): the bare encoder's rate, what a routed miss could cost at best.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use vane_model::batching::{BatchPolicy, EmbedQueue};
use vane_sidecar::config::Config;
use vane_sidecar::metrics::Metrics;
use vane_model::onnx::OnnxEncoder;
use vane_sidecar::pipeline::Pipeline;
use vane_sidecar::server::GrpcService;
use vane_sidecar::telemetry;
use vane_proto::v1::RouteRequest;
use vane_proto::v1::sidecar_client::SidecarClient;

const SUBJECTS: [&str; 8] = ["the derivative of x^3", "the capital of Peru", "a linked list in Rust", "the causes of the First World War", "photosynthesis", "compound interest", "the speed of sound", "a haiku about rain"];

/// A distinct short prompt (10-16 tokens) for every call, so that none is an exact-tier hit.
fn prompt(i: usize) -> String {
    format!("Question {i}: can you explain {} in {} sentences?", SUBJECTS[i % SUBJECTS.len()], 2 + i % 5)
}

struct Row {
    p50: f64,
    p99: f64,
    rate: f64,
    errors: usize,
}

async fn load(addr: std::net::SocketAddr, callers: usize, seconds: f64, counter: Arc<AtomicUsize>) -> Row {
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().tcp_nodelay(true).connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut client = SidecarClient::new(channel.clone());
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let (mut times, mut errors) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let req = RouteRequest { model: "auto".into(), prompt: prompt(i), context: "{}".into(), tenant: "bench".into(), ..Default::default() };
                let t0 = Instant::now();
                match client.route(req).await {
                    Ok(_) => times.push(t0.elapsed().as_secs_f64() * 1e3),
                    Err(_) => errors += 1,
                }
            }
            (times, errors)
        }));
    }
    collect(tasks, started).await
}

/// The encoder queue alone under the same load: `callers` tasks embedding distinct prompts.
async fn embed_load(queue: &EmbedQueue, callers: usize, seconds: f64, counter: Arc<AtomicUsize>) -> Row {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (queue, counter) = (queue.clone(), counter.clone());
            tokio::spawn(async move {
                let (mut times, mut errors) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let text = prompt(counter.fetch_add(1, Ordering::Relaxed));
                    let t0 = Instant::now();
                    match queue.embed(text).await {
                        Ok(_) => times.push(t0.elapsed().as_secs_f64() * 1e3),
                        Err(_) => errors += 1,
                    }
                }
                (times, errors)
            })
        })
        .collect();
    collect(tasks, started).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<(Vec<f64>, usize)>>, started: Instant) -> Row {
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (times, e) = t.await.unwrap();
        all.extend(times);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    Row { p50: pct(0.50), p99: pct(0.99), rate: all.len() as f64 / elapsed, errors }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.into())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: f64 = arg("--seconds", "5").parse()?;
    let callers: Vec<usize> = arg("--callers", "1,16,128").split(',').map(str::parse).collect::<Result<_, _>>()?;
    let models = arg("--models", "int8,fp32");
    let config_path = arg("--config", "config/vane.yaml");
    // Default: the configuration's model.encoders.
    let encoders: Option<usize> = std::env::args().any(|a| a == "--encoders").then(|| arg("--encoders", "1").parse()).transpose()?;
    let mut tracing = Config::load(std::path::Path::new(&config_path))?.tracing;
    tracing.enabled = std::env::args().any(|a| a == "--tracing");
    tracing.sampling_ratio = 1.0;
    let tracing = tracing.with_env(|name| std::env::var(name).ok()).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let exporter_metrics = Metrics::default();
    let telemetry = telemetry::init(Some(&tracing), &exporter_metrics)?;
    eprintln!("tracing: {}", if telemetry.tracing() { tracing.url() } else { "off".into() });
    let counter = Arc::new(AtomicUsize::new(0));
    let encoder_only = std::env::args().any(|a| a == "--encoder-only");
    let unit = if encoder_only { "Embed/s" } else { "Route/s" };
    println!("encoder: {}", Config::load(std::path::Path::new(&config_path))?.model.encoder);
    println!("| model | batching | callers | p50 ms | p99 ms | {unit} | errors |\n|---|---|---|---|---|---|---|");
    for model in models.split(',') {
        for batching in arg("--batching", "on,off").split(',').map(|b| b == "on") {
            let mut config = Config::load(std::path::Path::new(&config_path))?;
            // The configuration's own encoder in this precision (minilm-int8.onnx -> minilm-fp32.onnx).
            let file = config.model.onnx.file_name().map(|f| f.to_string_lossy().replace("int8", model).replace("fp32", model)).unwrap_or_default();
            config.model.onnx = config.model.onnx.with_file_name(file);
            if !batching {
                config.model.max_batch = 1;
            }
            config.cache.max_entries = 1_000_000;
            config.model.encoders = encoders.unwrap_or(config.model.encoders);
            let metrics = Metrics::default();
            let queue = EmbedQueue::start_many(OnnxEncoder::load_all(&config.model)?, BatchPolicy::from_config(&config.model), metrics.encoder.clone());
            let label = if batching { format!("max_batch {}", config.model.max_batch) } else { "off".into() };
            if encoder_only {
                embed_load(&queue, 4, 1.0, counter.clone()).await; // warm up
                for &n in &callers {
                    let r = embed_load(&queue, n, seconds, counter.clone()).await;
                    println!("| {model} | {label} | {n} | {:.2} | {:.2} | {:.0} | {} |", r.p50, r.p99, r.rate, r.errors);
                }
                continue;
            }
            let pipeline = Arc::new(Pipeline::build(&config, queue, metrics).await?);
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(
                Server::builder()
                    .add_service(GrpcService::new(pipeline))
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async { stopped.await.ok(); }),
            );
            load(addr, 4, 1.0, counter.clone()).await; // warm up
            for &n in &callers {
                let r = load(addr, n, seconds, counter.clone()).await;
                println!("| {model} | {label} | {n} | {:.2} | {:.2} | {:.0} | {} |", r.p50, r.p99, r.rate, r.errors);
            }
            let _ = stop.send(());
            server.await??;
        }
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    let dropped: Vec<String> = exporter_metrics.render().lines().filter(|l| l.starts_with("vane_trace_spans_dropped_total")).map(String::from).collect();
    eprintln!("spans dropped: {}", if dropped.is_empty() { "none".into() } else { dropped.join(", ") });
    Ok(())
}
