//! The encoder's threads and the queue in front of them.
//!
//! Callers on tokio workers send a job over a bounded queue and await a oneshot. A tokeniser
//! thread turns texts into token ids; an encoder thread collects tokenised jobs into one batch
//! (flushed at `max_batch` jobs, `max_batch_tokens` padded tokens, or `max_wait` after the first
//! arrived; with no wait it takes only what is already queued) and runs the model once. A full
//! queue is answered at once with [`EmbedError::Overloaded`]; jobs whose caller left are skipped.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::model::{Encoder, ModelError, Reading, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the encoder queue is full")]
    Overloaded,
    #[error("the encoder thread has stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A text's embedding, and how much of the text the encoder could read.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vector: Vec<f32>,
    pub reading: Reading,
}

type Reply = oneshot::Sender<Result<Embedded, EmbedError>>;

struct Job {
    text: String,
    reply: Reply,
}

struct Tokenized {
    ids: Vec<u32>,
    reading: Reading,
    reply: Reply,
}

/// When the encoder thread stops collecting and runs a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch: usize,
    /// Padded tokens (batch size x longest input) per pass.
    pub max_batch_tokens: usize,
    /// How long the first job of a batch may wait for company.
    pub max_wait: Duration,
    /// Jobs waiting for the tokeniser; more are refused as overload.
    pub queue: usize,
}

impl BatchPolicy {
    pub fn from_config(m: &crate::config::ModelConfig) -> BatchPolicy {
        BatchPolicy { max_batch: m.max_batch, max_batch_tokens: m.max_batch_tokens, max_wait: Duration::from_micros(m.max_wait_us), queue: m.queue }
    }
}

/// Cheap to clone; all clones feed the same encoder threads.
#[derive(Clone)]
pub struct EmbedQueue {
    tx: SyncSender<Job>,
    dim: usize,
}

impl EmbedQueue {
    pub fn start(encoder: Box<dyn Encoder>, policy: BatchPolicy, metrics: Metrics) -> EmbedQueue {
        Self::start_many(vec![encoder], policy, metrics)
    }

    /// One thread per encoder (`model.encoders`), taking turns at the queue: while one runs a
    /// batch the next collects its own, so a single-threaded model keeps several cores busy.
    pub fn start_many(encoders: Vec<Box<dyn Encoder>>, policy: BatchPolicy, metrics: Metrics) -> EmbedQueue {
        let first = encoders.first().expect("at least one encoder");
        let (dim, tokenizer) = (first.dim(), first.tokenizer());
        let (tx, jobs) = mpsc::sync_channel(policy.queue.max(1));
        // Small, so that a slow encoder pushes back into the bounded queue above.
        let (tokenized_tx, tokenized) = mpsc::sync_channel(policy.max_batch.max(1) * encoders.len());
        thread::Builder::new()
            .name("vane-tokenizer".into())
            .spawn(move || tokenize(tokenizer, jobs, tokenized_tx))
            .expect("spawning the tokenizer thread");
        let tokenized = Arc::new(Mutex::new(tokenized));
        for (i, encoder) in encoders.into_iter().enumerate() {
            let (tokenized, metrics) = (tokenized.clone(), metrics.clone());
            thread::Builder::new()
                .name(format!("vane-encoder-{i}"))
                .spawn(move || run(encoder, &tokenized, policy, metrics))
                .expect("spawning an encoder thread");
        }
        EmbedQueue { tx, dim }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub async fn embed(&self, text: String) -> Result<Embedded, EmbedError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { text, reply }) {
            Ok(()) => rx.await.map_err(|_| EmbedError::Stopped)?,
            Err(TrySendError::Full(_)) => Err(EmbedError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(EmbedError::Stopped),
        }
    }

    /// Embeds several texts, queued together so that they share batches.
    pub async fn embed_all(&self, texts: Vec<String>) -> Result<Vec<Embedded>, EmbedError> {
        let mut pending = Vec::with_capacity(texts.len());
        for text in texts {
            let (reply, rx) = oneshot::channel();
            match self.tx.try_send(Job { text, reply }) {
                Ok(()) => pending.push(rx),
                Err(TrySendError::Full(_)) => return Err(EmbedError::Overloaded),
                Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Stopped),
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(rx.await.map_err(|_| EmbedError::Stopped)??);
        }
        Ok(out)
    }
}

fn tokenize(tokenizer: Tokenizer, jobs: Receiver<Job>, out: SyncSender<Tokenized>) {
    while let Ok(job) = jobs.recv() {
        if job.reply.is_closed() {
            continue;
        }
        match tokenizer(&job.text) {
            Ok(tokens) => {
                if out.send(Tokenized { ids: tokens.ids, reading: tokens.reading, reply: job.reply }).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = job.reply.send(Err(e.into())); // the caller may have gone
            }
        }
    }
}

fn run(mut encoder: Box<dyn Encoder>, rx: &Mutex<Receiver<Tokenized>>, policy: BatchPolicy, metrics: Metrics) {
    while let Some(batches) = collect(rx, policy) {
        for jobs in batches {
            run_batch(encoder.as_mut(), jobs, &metrics);
        }
    }
}

/// The next batch, taken while holding the queue (a job that would break the token budget goes
/// in a batch of its own, after); `None` once the queue is closed.
fn collect(rx: &Mutex<Receiver<Tokenized>>, policy: BatchPolicy) -> Option<Vec<Vec<Tokenized>>> {
    let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
    let first = rx.recv().ok()?;
    let deadline = Instant::now() + policy.max_wait;
    let mut longest = first.ids.len().max(1);
    let mut jobs = vec![first];
    while jobs.len() < policy.max_batch {
        let next = if policy.max_wait.is_zero() {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
        };
        let Some(job) = next else { break };
        longest = longest.max(job.ids.len());
        if (jobs.len() + 1) * longest > policy.max_batch_tokens {
            return Some(vec![jobs, vec![job]]);
        }
        jobs.push(job);
    }
    Some(vec![jobs])
}

fn run_batch(encoder: &mut dyn Encoder, mut jobs: Vec<Tokenized>, metrics: &Metrics) {
    jobs.retain(|j| !j.reply.is_closed());
    if jobs.is_empty() {
        return;
    }
    let started = Instant::now();
    let batch: Vec<Vec<u32>> = jobs.iter_mut().map(|j| std::mem::take(&mut j.ids)).collect();
    let result = encoder.encode(&batch);
    metrics.observe_batch(jobs.len(), started.elapsed());
    match result {
        Ok(vectors) => {
            for (job, vector) in jobs.into_iter().zip(vectors) {
                let _ = job.reply.send(Ok(Embedded { vector, reading: job.reading })); // the caller may have gone; nothing to do
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records batch sizes; a text's ids are its bytes, and it embeds as [len, 1].
    struct Fake(Arc<Mutex<Vec<usize>>>);

    impl Encoder for Fake {
        fn dim(&self) -> usize {
            2
        }
        fn tokenizer(&self) -> Tokenizer {
            crate::model::byte_tokenizer()
        }
        fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
            self.0.lock().unwrap().push(batch.len());
            std::thread::sleep(Duration::from_millis(20));
            Ok(batch.iter().map(|ids| vec![ids.len() as f32, 1.0]).collect())
        }
    }

    fn policy(max_batch: usize, queue: usize) -> BatchPolicy {
        BatchPolicy { max_batch, max_batch_tokens: 1 << 20, max_wait: Duration::ZERO, queue }
    }

    async fn embed_all(q: &EmbedQueue, texts: Vec<String>) -> Vec<Result<Vec<f32>, EmbedError>> {
        let handles: Vec<_> = texts.into_iter().map(|t| { let q = q.clone(); tokio::spawn(async move { q.embed(t).await.map(|e| e.vector) }) }).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_a_batch_and_keep_their_order() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), policy(8, 64), Metrics::default());
        let got = embed_all(&q, (0..8).map(|i| "x".repeat(i)).collect()).await;
        for (i, v) in got.into_iter().enumerate() {
            assert_eq!(v.unwrap(), vec![i as f32, 1.0]);
        }
        let b = batches.lock().unwrap();
        assert!(b.len() < 8, "expected batching, got {b:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_encoders_take_turns_and_answers_stay_in_place() {
        let (a, b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let encoders: Vec<Box<dyn Encoder>> = vec![Box::new(Fake(a.clone())), Box::new(Fake(b.clone()))];
        let q = EmbedQueue::start_many(encoders, policy(1, 64), Metrics::default());
        let got = embed_all(&q, (0..6).map(|i| "y".repeat(i)).collect()).await;
        for (i, v) in got.into_iter().enumerate() {
            assert_eq!(v.unwrap(), vec![i as f32, 1.0]);
        }
        // While one sleeps in its pass, the other takes the next job.
        let (a, b) = (a.lock().unwrap().len(), b.lock().unwrap().len());
        assert_eq!(a + b, 6);
        assert!(a >= 1 && b >= 1, "one encoder did everything: {a} + {b}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_wait_gathers_requests_that_arrive_apart() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let p = BatchPolicy { max_wait: Duration::from_millis(200), ..policy(4, 64) };
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), p, Metrics::default());
        let first = { let q = q.clone(); tokio::spawn(async move { q.embed("a".into()).await }) };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let second = q.embed("bb".into()).await.unwrap().vector;
        assert_eq!((first.await.unwrap().unwrap().vector, second), (vec![1.0, 1.0], vec![2.0, 1.0]));
        assert_eq!(*batches.lock().unwrap(), vec![2], "one pass for both");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_batch_tokens_splits_long_inputs() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let p = BatchPolicy { max_batch_tokens: 100, max_wait: Duration::from_millis(100), ..policy(8, 64) };
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), p, Metrics::default());
        let got = embed_all(&q, vec!["x".repeat(60), "y".repeat(60), "z".repeat(60)]).await;
        assert!(got.iter().all(Result::is_ok));
        let b = batches.lock().unwrap();
        assert_eq!(b.iter().sum::<usize>(), 3);
        assert!(b.iter().all(|&n| n == 1), "two 60-token inputs pad to 120 > 100: {b:?}");
    }

    #[tokio::test]
    async fn a_full_queue_is_overload_not_a_wait() {
        let q = EmbedQueue::start(Box::new(Fake(Default::default())), policy(1, 1), Metrics::default());
        let results = embed_all(&q, vec!["a".into(); 12]).await;
        assert!(results.iter().any(|r| matches!(r, Err(EmbedError::Overloaded))), "{results:?}");
        assert!(results.iter().any(|r| r.is_ok()));
    }
}
