//! `vane-sidecar`: serves the filter over gRPC and the admin HTTP API until SIGINT/SIGTERM,
//! reloading its configuration on SIGHUP and when the file changes. The offline tools (train, eval, eval-cache, eval-pii, read) are the `vane` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::transport::server::TcpIncoming;
use tracing::{error, info};

use vane_model::batching::{BatchPolicy, EmbedQueue};
use vane_model::onnx::OnnxEncoder;
use vane_sidecar::admin::{self, AdminState};
use vane_sidecar::config::{Config, ConfigError};
use vane_sidecar::metrics::Metrics;
use vane_sidecar::pipeline::Pipeline;
use vane_sidecar::reload::Reloader;
use vane_sidecar::server::GrpcService;
use vane_sidecar::telemetry;

#[derive(Parser)]
#[command(name = "vane-sidecar", about = "The Vane sidecar: semantic routing and caching for LLM traffic")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the filter over gRPC (the default).
    Serve {
        #[arg(long, env = "VANE_CONFIG", default_value = "config/vane.yaml")]
        config: PathBuf,
        /// Overrides `server.grpc` (tests and launchers pick free ports).
        #[arg(long)]
        grpc: Option<SocketAddr>,
        /// Overrides `server.admin`.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Exit 0 if a running sidecar is ready (`GET /readyz` on its admin address answers 200),
    /// 1 otherwise: the container image's HEALTHCHECK, with no curl in the image.
    Probe {
        #[arg(long, default_value = "127.0.0.1:9190")]
        admin: SocketAddr,
    },
}

/// glibc raises its mmap threshold each time a large buffer is freed, so that later ones (a
/// 1 MiB prompt decoded by tonic, its copies) come from the heap arenas and stay in the RSS once
/// freed. A fixed threshold keeps every buffer over 128 KiB in its own mapping, returned to the
/// OS when freed (README, "Bounded memory", has the measurement).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers_to_the_os() {
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers_to_the_os() {}

fn main() -> ExitCode {
    return_large_buffers_to_the_os();
    let command = Cli::parse().command.unwrap_or_else(|| {
        let config = std::env::var_os("VANE_CONFIG").map_or("config/vane.yaml".into(), Into::into);
        Command::Serve { config, grpc: None, admin: None }
    });
    let result = match command {
        Command::Serve { config, grpc, admin } => serve(config, grpc, admin),
        Command::Probe { admin } => return probe(admin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(2)
        }
    }
}

/// The configuration file with the `OTEL_*` variables laid over its `tracing:` section.
fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    config.tracing = config.tracing.with_env(|name| std::env::var(name).ok()).map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn serve(path: PathBuf, grpc: Option<SocketAddr>, admin: Option<SocketAddr>) -> anyhow::Result<()> {
    // Built first: the trace exporter's gRPC channel lives on it.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let metrics = Metrics::default();
    let loaded = load(&path);
    // Logging is installed even when the configuration is bad, to report why.
    let telemetry = runtime.block_on(async { telemetry::init(loaded.as_ref().ok().map(|c| &c.tracing), &metrics) }).context("setting up trace export")?;
    let mut config = loaded?;
    // What the reloader compares a changed file with: as loaded, before the flags' overrides.
    let as_loaded = config.clone();
    config.server.grpc = grpc.unwrap_or(config.server.grpc);
    config.server.admin = admin.unwrap_or(config.server.admin);
    if telemetry.tracing() {
        let t = &config.tracing;
        info!(endpoint = %t.url(), protocol = ?t.protocol, sampling_ratio = t.sampling_ratio, service = %t.service_name, "exporting traces");
    }
    let started = std::time::Instant::now();
    let encoders = OnnxEncoder::load_all(&config.model).context("loading the encoder")?;
    info!(model = %config.model.onnx.display(), sessions = encoders.len(), took_ms = started.elapsed().as_millis() as u64, "encoder ready");
    let queue = EmbedQueue::start_many(encoders, BatchPolicy::from_config(&config.model), metrics.encoder.clone());

    let served = runtime.block_on(async move {
        let pipeline = Arc::new(Pipeline::build(&config, queue, metrics.clone()).await.context("building the pipeline")?);
        Arc::new(Reloader::new(path, as_loaded, pipeline.clone(), metrics.clone())).spawn().context("watching for SIGHUP")?;
        if let Some(every) = config.cache.snapshot.as_ref().and(std::num::NonZeroU64::new(config.cache.snapshot_interval_seconds)) {
            let pipeline = pipeline.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(every.get()));
                tick.tick().await; // the first tick is immediate: nothing to save yet
                loop {
                    tick.tick().await;
                    let pipeline = pipeline.clone();
                    let _ = tokio::task::spawn_blocking(move || pipeline.save_cache()).await;
                }
            });
        }
        let for_snapshot = pipeline.clone();
        let ready = Arc::new(AtomicBool::new(false));
        let admin_listener = tokio::net::TcpListener::bind(config.server.admin).await.with_context(|| format!("binding admin {}", config.server.admin))?;
        let grpc_listener = tokio::net::TcpListener::bind(config.server.grpc).await.with_context(|| format!("binding gRPC {}", config.server.grpc))?;
        let admin = axum::serve(admin_listener, admin::routes(AdminState { metrics, ready: ready.clone() }, pipeline.clone())).with_graceful_shutdown(shutdown());
        let grpc = tonic::transport::Server::builder()
            .add_service(GrpcService::new(pipeline))
            // Without TCP_NODELAY each small reply waits for a delayed ACK: ~40 ms per request.
            .serve_with_incoming_shutdown(TcpIncoming::from(grpc_listener).with_nodelay(Some(true)), shutdown());
        ready.store(true, Ordering::Release);
        info!(grpc = %config.server.grpc, admin = %config.server.admin, cache_epoch = %config.cache_epoch, "serving");
        let (a, g) = tokio::join!(admin, grpc);
        // Saved before reporting a server error too: the cache is still good.
        let _ = tokio::task::spawn_blocking(move || for_snapshot.save_cache()).await;
        a.context("admin server")?;
        g.context("gRPC server")?;
        info!("stopped");
        anyhow::Ok(())
    });
    // Off the runtime's workers: the batch exporter's shutdown blocks until the last spans are sent.
    let _ = runtime.block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await });
    served
}

fn probe(admin: SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let status = std::net::TcpStream::connect_timeout(&admin, timeout).and_then(|mut stream| {
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
        let mut head = [0u8; 12]; // "HTTP/1.1 200"
        stream.read_exact(&mut head)?;
        Ok(head)
    });
    match status {
        Ok(head) if head.ends_with(b" 200") => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!("{admin}/readyz: {}", String::from_utf8_lossy(&head));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{admin}/readyz: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
