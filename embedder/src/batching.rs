//! Runs the encoder on its own thread and batches concurrent requests into one pass.
//!
//! Callers on tokio workers send a job over a bounded queue and await a oneshot; the encoder
//! thread takes whatever is queued (up to `max_batch`) and embeds it together. A full queue is
//! answered at once with [`EmbedError::Overloaded`], and jobs whose caller went away are skipped.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::model::{Encoder, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the encoder queue is full")]
    Overloaded,
    #[error("the encoder thread has stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// Cheap to clone; all clones feed the same encoder thread.
#[derive(Clone)]
pub struct EmbedQueue {
    tx: SyncSender<Job>,
    dim: usize,
}

impl EmbedQueue {
    pub fn start(encoder: Box<dyn Encoder>, max_batch: usize, queue: usize, metrics: Metrics) -> EmbedQueue {
        let dim = encoder.dim();
        let (tx, rx) = mpsc::sync_channel(queue);
        thread::Builder::new()
            .name("vane-encoder".into())
            .spawn(move || run(encoder, rx, max_batch.max(1), metrics))
            .expect("spawning the encoder thread");
        EmbedQueue { tx, dim }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { text, reply }) {
            Ok(()) => rx.await.map_err(|_| EmbedError::Stopped)?,
            Err(TrySendError::Full(_)) => Err(EmbedError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(EmbedError::Stopped),
        }
    }
}

fn run(mut encoder: Box<dyn Encoder>, rx: Receiver<Job>, max_batch: usize, metrics: Metrics) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        let texts: Vec<&str> = jobs.iter().map(|j| j.text.as_str()).collect();
        let result = encoder.embed(&texts);
        metrics.observe_batch(jobs.len(), started.elapsed());
        match result {
            Ok(vectors) => {
                for (job, v) in jobs.into_iter().zip(vectors) {
                    let _ = job.reply.send(Ok(v)); // the caller may have gone; nothing to do
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(ModelError::Inference(message.clone()).into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records batch sizes; embeds a text as [len, 1] normalised.
    struct Fake(Arc<Mutex<Vec<usize>>>);

    impl Encoder for Fake {
        fn dim(&self) -> usize {
            2
        }
        fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
            self.0.lock().unwrap().push(texts.len());
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_a_batch_and_keep_their_order() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), 8, 64, Metrics::default());
        let handles: Vec<_> = (0..8).map(|i| { let q = q.clone(); tokio::spawn(async move { q.embed("x".repeat(i)).await.unwrap() }) }).collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), vec![i as f32, 1.0]);
        }
        let b = batches.lock().unwrap();
        assert!(b.len() < 8, "expected batching, got {b:?}");
    }

    #[tokio::test]
    async fn a_full_queue_is_overload_not_a_wait() {
        let q = EmbedQueue::start(Box::new(Fake(Default::default())), 1, 1, Metrics::default());
        let results = futures_join(&q, 6).await;
        assert!(results.iter().any(|r| matches!(r, Err(EmbedError::Overloaded))), "{results:?}");
        assert!(results.iter().any(|r| r.is_ok()));
    }

    async fn futures_join(q: &EmbedQueue, n: usize) -> Vec<Result<Vec<f32>, EmbedError>> {
        let handles: Vec<_> = (0..n).map(|_| { let q = q.clone(); tokio::spawn(async move { q.embed("a".into()).await }) }).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
