//! `vane`: the offline tools. `train` fits a classifier head on labelled JSONL and `eval`
//! measures one; `eval-pii` and `eval-cache` measure the PII detector and the semantic cache;
//! `read` measures how much of a data set the encoder's vocabulary covers. The sidecar itself is
//! `vane-sidecar`.

mod cache_eval;
mod commands;
mod dataset;
mod pii_eval;
mod report;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::error;

use commands::{EvalArgs, EvalCacheArgs, ReadArgs, TrainArgs};

#[derive(Parser)]
#[command(name = "vane", about = "Vane's offline tools: train and measure classifier heads, the semantic cache and the PII detector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a classifier head over the embedding from labelled JSONL; prints the held-out report.
    Train(TrainArgs),
    /// Measure a head on labelled JSONL; the last line is `accuracy=<x> macro_f1=<y>`.
    Eval(EvalArgs),
    /// Measure PII detection on presidio-shaped JSONL; the last line is `precision=<p> recall=<r>`.
    EvalPii {
        #[arg(long)]
        data: PathBuf,
    },
    /// Measure the semantic cache's hit rule (cosine threshold + near-duplicate guard) on labelled
    /// question pairs; the last line is `threshold=<t> precision=<p> recall=<r>` (default threshold, guard on).
    EvalCache(EvalCacheArgs),
    /// How much of each text the encoder can read (unknown-token share, texts past the window):
    /// the measurement behind `cache.max_unknown_share` and `routing.max_unknown_share`.
    Read(ReadArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VANE_LOG").unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .init();
    let result = match Cli::parse().command {
        Command::Train(args) => commands::train(args),
        Command::Eval(args) => commands::eval(args),
        Command::EvalPii { data } => commands::eval_pii(&data),
        Command::EvalCache(args) => commands::eval_cache(args),
        Command::Read(args) => commands::read(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(2)
        }
    }
}
