//! Hot reload of the configuration: on SIGHUP, and when the file's contents change. The file is
//! read by path every second ([`POLL`]) rather than watched by inode: Kubernetes updates a
//! mounted ConfigMap by swapping a `..data` symlink in its directory, editors replace files by
//! renaming, and `extends:` chains name other files; reading the path sees all of them, costs
//! a few KB a second and needs no dependency. Comments and formatting alone change nothing.
//!
//! A new configuration is checked whole ([`Config::load`]) before anything changes, and applies
//! whole or not at all. What applies live is the policy ([`Pipeline::reload`]): routing and
//! safety (their heads re-read), the cache's thresholds and per-category and per-language rules,
//! which answers it stores (`cache.store`), and the cache epoch that follows them, so answers stored under the old policy are not served under the new.
//! A change anywhere else ([`restart_fields`]: the encoder, ports, limits, the cache backend,
//! its connection and sizes, tickets) needs a restart: it is logged with the fields' names and
//! nothing of it applies, so the running configuration stays consistent. Every attempt is
//! counted in `vane_config_reloads_total{result}`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use crate::config::{Config, read_layers, restart_fields};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// How often the file is read for changes.
pub const POLL: Duration = Duration::from_secs(1);

/// What one reload did: the `vane_config_reloads_total{result}` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The file says what the running configuration says.
    Unchanged,
    /// Unreadable or invalid: the running configuration keeps serving.
    Invalid,
    /// Changed outside the live fields: nothing applied until a restart.
    NeedsRestart,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Invalid => "invalid",
            Outcome::NeedsRestart => "needs_restart",
        }
    }
}

pub struct Reloader {
    path: PathBuf,
    pipeline: Arc<Pipeline>,
    metrics: Metrics,
    /// The configuration serving now; held across a reload, so reloads never interleave.
    current: tokio::sync::Mutex<Config>,
}

impl Reloader {
    /// `config` is what `path` held when the pipeline was built from it.
    pub fn new(path: PathBuf, config: Config, pipeline: Arc<Pipeline>, metrics: Metrics) -> Reloader {
        Reloader { path, pipeline, metrics, current: tokio::sync::Mutex::new(config) }
    }

    /// Loads the file again and applies it if it can be; see the module's documentation.
    pub async fn reload(&self) -> Outcome {
        let mut current = self.current.lock().await;
        let path = self.path.clone();
        // Off the async workers: it reads and digests the encoder and the heads.
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let outcome = match loaded {
            Err(e) => {
                warn!(error = %e, "configuration not reloaded: the load failed");
                Outcome::Invalid
            }
            Ok(Err(e)) => {
                warn!(path = %self.path.display(), error = %chain(&e), "configuration not reloaded: invalid; the running one keeps serving");
                Outcome::Invalid
            }
            Ok(Ok(new)) => self.apply(&mut current, new).await,
        };
        self.metrics.config_reload(outcome.label());
        outcome
    }

    async fn apply(&self, current: &mut Config, new: Config) -> Outcome {
        let restart = restart_fields(current, &new);
        if !restart.is_empty() {
            warn!(path = %self.path.display(), fields = %restart.join(", "), "configuration not reloaded: these fields apply only at a restart; nothing changed, the running one keeps serving");
            return Outcome::NeedsRestart;
        }
        if new.written == current.written && new.cache_epoch == current.cache_epoch {
            return Outcome::Unchanged;
        }
        match self.pipeline.reload(&new).await {
            Ok(()) => {
                info!(path = %self.path.display(), cache_epoch = %new.cache_epoch, was = %current.cache_epoch, "configuration reloaded");
                *current = new;
                Outcome::Applied
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %chain(&e), "configuration not reloaded: its policy cannot be built; the running one keeps serving");
                Outcome::Invalid
            }
        }
    }

    /// Reloads on SIGHUP and when the file changes, for as long as the runtime runs. SIGHUP is
    /// caught from this call on (its default would end the process).
    pub fn spawn(self: Arc<Self>) -> std::io::Result<()> {
        let hangup = signal(SignalKind::hangup())?;
        tokio::spawn(self.watch(hangup));
        Ok(())
    }

    async fn watch(self: Arc<Self>, mut hangup: Signal) {
        let mut seen = Some(self.current.lock().await.written.clone());
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    info!(path = %self.path.display(), "SIGHUP: reloading the configuration");
                    seen = written(&self.path);
                    self.reload().await;
                }
                _ = tick.tick() => {
                    let now = written(&self.path);
                    if now != seen {
                        seen = now;
                        self.reload().await;
                    }
                }
            }
        }
    }
}

/// The file's YAML with its `extends` chain applied; `None` while it cannot be read or parsed
/// (a change to that state is reloaded too, so that it is reported).
fn written(path: &Path) -> Option<serde_yaml_ng::Value> {
    read_layers(path).ok().and_then(|text| serde_yaml_ng::from_str(&text).ok())
}

/// An error with its sources, as one line.
fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
