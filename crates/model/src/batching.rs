//! The encoder's threads and the queue in front of them.
//!
//! Callers on tokio workers queue a job and await a oneshot. A tokeniser thread turns texts into
//! token ids; an encoder thread collects tokenised jobs into one batch (flushed at `max_batch`
//! jobs, `max_batch_tokens` padded tokens, or `max_wait` after the first arrived; with no wait it
//! takes only what is already queued) and runs the model once. Jobs wait in two lanes
//! ([`Priority`]): each request's one prompt embedding is always taken before any jailbreak
//! window, at both stages, so a flood of long prompts (hundreds of windows) never delays the
//! prompts of other requests by more than the batch already running. Within a lane jobs keep
//! their order: a request's windows finish together, which is what a deadline wants (round
//! robin between long requests would make all of them late); among tokenised prompts the
//! shortest goes first (a long prompt's 256-token pass costs many short ones'). Each lane holds at most `queue`
//! jobs; past that a caller is answered at once with [`EmbedError::Overloaded`] (a request's
//! windows are admitted all or none). Jobs whose caller left are skipped.
//!
//! A batch also stops growing before its pass would outlast `max_pass`, judged by the cost of a
//! padded token measured over recent passes ([`TokenCost`]): on a slow core a short prompt is
//! not padded into a pass with long ones, and a prompt arriving behind a pass waits for about
//! `max_pass` at most (or one text's pass, when that alone takes longer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::metrics::EncoderMetrics;
use crate::{Encoder, ModelError, Reading, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the encoder queue is full")]
    Overloaded,
    #[error("the encoder thread has stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A text's embedding, how much of the text the encoder could read, and the pass that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vector: Vec<f32>,
    pub reading: Reading,
    pub pass: Pass,
}

/// One encoder pass, as its thread timed it (for the request's trace: the caller knows when it
/// queued the text, so the wait is `started` minus that).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    pub started: Instant,
    pub took: Duration,
    /// Texts embedded in the pass.
    pub batch: usize,
}

type Reply = oneshot::Sender<Result<Embedded, EmbedError>>;

/// Which lane a job waits in; the first is always served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A request's prompt (and its conversation's): one per request, on its critical path.
    Prompt,
    /// Jailbreak windows over long or many texts: many per request, under a deadline.
    Window,
}

struct Job {
    text: String,
    reply: Reply,
}

struct Tokenized {
    ids: Vec<u32>,
    reading: Reading,
    reply: Reply,
}

enum Popped<T> {
    Job(Priority, T),
    /// Nothing to take before the deadline.
    Empty,
    /// Closed, and nothing left to take.
    Closed,
}

/// Windows in one encoder pass: a prompt arriving while both encoders run windows waits for one
/// such pass (~5 ms for 4 windows of ~45 tokens on a quiet core), not for `max_batch` of them.
const WINDOW_BATCH: usize = 4;

/// Two lanes behind one lock; `pop` prefers the prompt lane. FIFO, except that a prompt lane
/// with a `cost` hands out its cheapest job first.
struct Lanes<T> {
    state: Mutex<LaneState<T>>,
    cost: Option<fn(&T) -> usize>,
    /// Signalled when a job arrives or the lanes close.
    arrived: Condvar,
    /// Signalled when a job leaves (room for a blocked producer).
    left: Condvar,
    /// Depth gauges (prompt, window), set under the lock on every change: one atomic store.
    depth: Option<[Gauge; 2]>,
}

struct LaneState<T> {
    prompt: VecDeque<T>,
    window: VecDeque<T>,
    closed: bool,
}

impl<T> LaneState<T> {
    fn lane(&mut self, p: Priority) -> &mut VecDeque<T> {
        match p {
            Priority::Prompt => &mut self.prompt,
            Priority::Window => &mut self.window,
        }
    }

}

impl<T> Lanes<T> {
    fn new(cost: Option<fn(&T) -> usize>) -> Lanes<T> {
        Lanes { state: Mutex::new(LaneState { prompt: VecDeque::new(), window: VecDeque::new(), closed: false }), cost, arrived: Condvar::new(), left: Condvar::new(), depth: None }
    }

    /// Lanes whose depth is exported (`vane_encoder_queue_depth`).
    fn with_depth(mut self, metrics: &EncoderMetrics) -> Lanes<T> {
        self.depth = Some([metrics.queue_depth("prompt"), metrics.queue_depth("window")]);
        self
    }

    fn report(&self, s: &LaneState<T>, p: Priority) {
        if let Some(depth) = &self.depth {
            let (gauge, lane) = match p {
                Priority::Prompt => (&depth[0], &s.prompt),
                Priority::Window => (&depth[1], &s.window),
            };
            gauge.set(lane.len() as i64);
        }
    }

    fn lock(&self) -> MutexGuard<'_, LaneState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues all of `jobs` in lane `p` if it then holds at most `cap`, else none.
    fn try_push(&self, p: Priority, jobs: Vec<T>, cap: usize) -> Result<(), EmbedError> {
        let mut s = self.lock();
        if s.closed {
            return Err(EmbedError::Stopped);
        }
        if s.lane(p).len() + jobs.len() > cap {
            return Err(EmbedError::Overloaded);
        }
        s.lane(p).extend(jobs);
        self.report(&s, p);
        drop(s);
        self.arrived.notify_all();
        Ok(())
    }

    /// Puts a job just taken back at the head of its lane (for another pass, or another encoder).
    fn give_back(&self, p: Priority, job: T) {
        let mut s = self.lock();
        s.lane(p).push_front(job);
        self.report(&s, p);
        drop(s);
        self.arrived.notify_one();
    }

    /// Queues `job`, waiting while lane `p` holds `cap` or more; `false` once closed.
    fn push_wait(&self, p: Priority, job: T, cap: usize) -> bool {
        let mut s = self.lock();
        while !s.closed && s.lane(p).len() >= cap {
            s = self.left.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.closed {
            return false;
        }
        s.lane(p).push_back(job);
        drop(s);
        self.arrived.notify_one();
        true
    }

    /// The next job and its lane (prompt lane first), waiting until `until` (forever when
    /// `None`); `None` on timeout, or once the lanes are closed and empty.
    fn pop(&self, until: Option<Instant>) -> Option<(Priority, T)> {
        match self.pop_from(true, until) {
            Popped::Job(p, job) => Some((p, job)),
            Popped::Empty | Popped::Closed => None,
        }
    }

    /// Like [`Lanes::pop`], taking from the window lane only when `windows`.
    fn pop_from(&self, windows: bool, until: Option<Instant>) -> Popped<T> {
        let mut s = self.lock();
        loop {
            let cheapest = self.cost.and_then(|cost| (0..s.prompt.len()).min_by_key(|&i| cost(&s.prompt[i])));
            let next = match cheapest {
                Some(i) => s.prompt.remove(i),
                None => s.prompt.pop_front(),
            };
            let job = match next {
                Some(job) => Some((Priority::Prompt, job)),
                None if windows => s.window.pop_front().map(|job| (Priority::Window, job)),
                None => None,
            };
            if let Some((p, job)) = job {
                self.report(&s, p);
                drop(s);
                self.left.notify_one();
                return Popped::Job(p, job);
            }
            if s.closed {
                return Popped::Closed;
            }
            s = match until {
                None => self.arrived.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let wait = t.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        return Popped::Empty;
                    }
                    self.arrived.wait_timeout(s, wait).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    /// What is queued now, without waiting (the window lane only when `windows`).
    fn try_pop(&self, windows: bool) -> Option<(Priority, T)> {
        match self.pop_from(windows, Some(Instant::now())) {
            Popped::Job(p, job) => Some((p, job)),
            Popped::Empty | Popped::Closed => None,
        }
    }

    fn len(&self, p: Priority) -> usize {
        self.lock().lane(p).len()
    }

    /// Wakes everyone; queued jobs are still handed out, new ones refused.
    fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
        self.left.notify_all();
    }
}

/// When the encoder thread stops collecting and runs a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch: usize,
    /// Padded tokens (batch size x longest input) per pass.
    pub max_batch_tokens: usize,
    /// How long the first job of a batch may wait for company.
    pub max_wait: Duration,
    /// Jobs waiting for the tokeniser, per lane; more are refused as overload.
    pub queue: usize,
    /// The longest a pass should take, by the measured cost per padded token ([`TokenCost`]);
    /// zero: no limit.
    pub max_pass: Duration,
}

impl BatchPolicy {
    pub fn from_config(m: &crate::config::ModelConfig) -> BatchPolicy {
        BatchPolicy {
            max_batch: m.max_batch,
            max_batch_tokens: m.max_batch_tokens,
            max_wait: Duration::from_micros(m.max_wait_us),
            queue: m.queue,
            max_pass: Duration::from_millis(m.max_pass_ms),
        }
    }
}

/// What one padded token costs the encoder, in nanoseconds: a moving average over the passes of
/// every encoder thread (0 until the first pass).
#[derive(Default)]
struct TokenCost(AtomicU64);

impl TokenCost {
    fn observe(&self, padded: usize, took: Duration) {
        let now = u64::try_from(took.as_nanos() / padded.max(1) as u128).unwrap_or(u64::MAX);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 { now } else { old - old / 4 + now / 4 };
        self.0.store(new.max(1), Ordering::Relaxed);
    }

    /// Whether a pass of `padded` tokens is expected to take longer than `max` (never while
    /// nothing is measured, or with no limit).
    fn over(&self, padded: usize, max: Duration) -> bool {
        !max.is_zero() && Duration::from_nanos(self.0.load(Ordering::Relaxed).saturating_mul(padded as u64)) > max
    }
}

/// Closes the job lanes when the last [`EmbedQueue`] clone goes, which stops the threads.
struct Feed {
    jobs: Arc<Lanes<Job>>,
    cap: usize,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.jobs.close();
    }
}

/// Cheap to clone; all clones feed the same encoder threads.
#[derive(Clone)]
pub struct EmbedQueue {
    feed: Arc<Feed>,
    dim: usize,
}

impl EmbedQueue {
    pub fn start(encoder: Box<dyn Encoder>, policy: BatchPolicy, metrics: EncoderMetrics) -> EmbedQueue {
        Self::start_many(vec![encoder], policy, metrics)
    }

    /// One thread per encoder (`model.encoders`), taking turns at the queue: while one runs a
    /// batch the next collects its own, so a single-threaded model keeps several cores busy.
    pub fn start_many(encoders: Vec<Box<dyn Encoder>>, policy: BatchPolicy, metrics: EncoderMetrics) -> EmbedQueue {
        let first = encoders.first().expect("at least one encoder");
        let (dim, tokenizer) = (first.dim(), first.tokenizer());
        metrics.queue_capacity(policy.queue.max(1));
        let jobs = Arc::new(Lanes::new(None).with_depth(&metrics));
        // Shortest prompt first: a long prompt's one pass (256 tokens) costs as much as many
        // short ones, and every prompt waits under the same filter timeout.
        let tokenized = Arc::new(Lanes::new(Some(|t: &Tokenized| t.ids.len())));
        // Small, so that a slow encoder pushes back into the bounded job lanes.
        let room = policy.max_batch.max(1) * encoders.len();
        {
            let (jobs, tokenized) = (jobs.clone(), tokenized.clone());
            thread::Builder::new()
                .name("vane-tokenizer".into())
                .spawn(move || tokenize(tokenizer, &jobs, &tokenized, room))
                .expect("spawning the tokenizer thread");
        }
        let turn = Arc::new(Mutex::new(()));
        let cost = Arc::new(TokenCost::default());
        for (i, encoder) in encoders.into_iter().enumerate() {
            let (tokenized, turn, cost, metrics) = (tokenized.clone(), turn.clone(), cost.clone(), metrics.clone());
            thread::Builder::new()
                .name(format!("vane-encoder-{i}"))
                .spawn(move || run(encoder, &tokenized, &turn, &cost, policy, metrics))
                .expect("spawning an encoder thread");
        }
        EmbedQueue { feed: Arc::new(Feed { jobs, cap: policy.queue.max(1) }), dim }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds one text in the prompt lane.
    pub async fn embed(&self, text: String) -> Result<Embedded, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.feed.jobs.try_push(Priority::Prompt, vec![Job { text, reply }], self.feed.cap)?;
        rx.await.map_err(|_| EmbedError::Stopped)?
    }

    /// Embeds jailbreak windows in the window lane (all admitted, or [`EmbedError::Overloaded`]),
    /// waiting for them until `deadline`: a window not done by then is `None`, and is dropped
    /// from the queue (the threads skip jobs whose caller left).
    pub async fn embed_windows(&self, texts: Vec<String>, deadline: tokio::time::Instant) -> Result<Vec<Option<Vec<f32>>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (jobs, mut pending): (Vec<Job>, Vec<_>) = texts
            .into_iter()
            .map(|text| {
                let (reply, rx) = oneshot::channel();
                (Job { text, reply }, rx)
            })
            .unzip();
        self.feed.jobs.try_push(Priority::Window, jobs, self.feed.cap)?;
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending.iter_mut() {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(result)) => out.push(Some(result?.vector)),
                Ok(Err(_)) => return Err(EmbedError::Stopped),
                Err(_) => break,
            }
        }
        // Past the deadline: keep any later window that happens to be done already.
        for rx in pending.iter_mut().skip(out.len()) {
            out.push(match rx.try_recv() {
                Ok(result) => Some(result?.vector),
                Err(_) => None,
            });
        }
        Ok(out)
    }
}

/// Tokenises jobs, prompts first, into lanes of `room` jobs each: a slow encoder pushes back into
/// the bounded job lanes (and so into overload), never into an unbounded backlog.
fn tokenize(tokenizer: Tokenizer, jobs: &Lanes<Job>, out: &Lanes<Tokenized>, room: usize) {
    loop {
        // A window is taken only when the encoders' window lane has room (this thread is its
        // only producer, so the push below cannot block); meanwhile prompts still pass. The full
        // lane is looked at again each millisecond.
        let windows = out.len(Priority::Window) < room;
        let until = (!windows).then(|| Instant::now() + Duration::from_millis(1));
        let (priority, job) = match jobs.pop_from(windows, until) {
            Popped::Job(p, job) => (p, job),
            Popped::Empty => continue,
            Popped::Closed => break,
        };
        if job.reply.is_closed() {
            continue;
        }
        match tokenizer(&job.text) {
            Ok(tokens) => {
                let t = Tokenized { ids: tokens.ids, reading: tokens.reading, reply: job.reply };
                if !out.push_wait(priority, t, room) {
                    return;
                }
            }
            Err(e) => {
                let _ = job.reply.send(Err(e.into())); // the caller may have gone
            }
        }
    }
    out.close();
}

fn run(mut encoder: Box<dyn Encoder>, lanes: &Lanes<Tokenized>, turn: &Mutex<()>, cost: &TokenCost, policy: BatchPolicy, metrics: EncoderMetrics) {
    while let Some(batches) = collect(lanes, turn, cost, policy) {
        for jobs in batches {
            run_batch(encoder.as_mut(), jobs, cost, &metrics);
        }
    }
}

/// The next batch, collected while holding `turn` (a job that would break the token budget goes
/// in a batch of its own, after); `None` once the lanes are closed and empty. Prompts go first and
/// in batches of their own; windows only when no prompt waits, at most [`WINDOW_BATCH`] a pass.
/// A job that would make the pass outlast `max_pass` goes back to its lane, for the next free
/// encoder.
fn collect(lanes: &Lanes<Tokenized>, turn: &Mutex<()>, cost: &TokenCost, policy: BatchPolicy) -> Option<Vec<Vec<Tokenized>>> {
    let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
    let (lane, first) = lanes.pop(None)?;
    let (windows, max_batch) = match lane {
        Priority::Prompt => (false, policy.max_batch),
        Priority::Window => (true, policy.max_batch.min(WINDOW_BATCH)),
    };
    let deadline = Instant::now() + policy.max_wait;
    let mut longest = first.ids.len().max(1);
    let mut jobs = vec![first];
    while jobs.len() < max_batch {
        let next = if policy.max_wait.is_zero() { lanes.try_pop(windows) } else { match lanes.pop_from(windows, Some(deadline)) {
            Popped::Job(p, job) => Some((p, job)),
            Popped::Empty | Popped::Closed => None,
        } };
        let Some((p, job)) = next else { break };
        let padded = (jobs.len() + 1) * longest.max(job.ids.len());
        if cost.over(padded, policy.max_pass) {
            lanes.give_back(p, job);
            break;
        }
        longest = longest.max(job.ids.len());
        if padded > policy.max_batch_tokens {
            return Some(vec![jobs, vec![job]]);
        }
        jobs.push(job);
    }
    Some(vec![jobs])
}

fn run_batch(encoder: &mut dyn Encoder, mut jobs: Vec<Tokenized>, cost: &TokenCost, metrics: &EncoderMetrics) {
    jobs.retain(|j| !j.reply.is_closed());
    if jobs.is_empty() {
        return;
    }
    let started = Instant::now();
    let batch: Vec<Vec<u32>> = jobs.iter_mut().map(|j| std::mem::take(&mut j.ids)).collect();
    let padded = batch.len() * batch.iter().map(Vec::len).max().unwrap_or(0);
    let result = encoder.encode(&batch);
    let pass = Pass { started, took: started.elapsed(), batch: jobs.len() };
    cost.observe(padded, pass.took);
    metrics.observe_batch(pass.batch, pass.took);
    match result {
        Ok(vectors) => {
            for (job, vector) in jobs.into_iter().zip(vectors) {
                let _ = job.reply.send(Ok(Embedded { vector, reading: job.reading, pass })); // the caller may have gone; nothing to do
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
            crate::byte_tokenizer()
        }
        fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
            self.0.lock().unwrap().push(batch.len());
            std::thread::sleep(Duration::from_millis(20));
            Ok(batch.iter().map(|ids| vec![ids.len() as f32, 1.0]).collect())
        }
    }

    fn policy(max_batch: usize, queue: usize) -> BatchPolicy {
        BatchPolicy { max_batch, max_batch_tokens: 1 << 20, max_wait: Duration::ZERO, queue, max_pass: Duration::ZERO }
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
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), policy(8, 64), EncoderMetrics::default());
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
        let q = EmbedQueue::start_many(encoders, policy(1, 64), EncoderMetrics::default());
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
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), p, EncoderMetrics::default());
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
        let q = EmbedQueue::start(Box::new(Fake(batches.clone())), p, EncoderMetrics::default());
        let got = embed_all(&q, vec!["x".repeat(60), "y".repeat(60), "z".repeat(60)]).await;
        assert!(got.iter().all(Result::is_ok));
        let b = batches.lock().unwrap();
        assert_eq!(b.iter().sum::<usize>(), 3);
        assert!(b.iter().all(|&n| n == 1), "two 60-token inputs pad to 120 > 100: {b:?}");
    }

    #[tokio::test]
    async fn a_full_queue_is_overload_not_a_wait() {
        let q = EmbedQueue::start(Box::new(Fake(Default::default())), policy(1, 1), EncoderMetrics::default());
        let results = embed_all(&q, vec!["a".into(); 12]).await;
        assert!(results.iter().any(|r| matches!(r, Err(EmbedError::Overloaded))), "{results:?}");
        assert!(results.iter().any(|r| r.is_ok()));
    }

    #[test]
    fn the_queue_depth_gauges_follow_each_lane() {
        let metrics = EncoderMetrics::default();
        let lanes = Lanes::<u32>::new(None).with_depth(&metrics);
        let (prompt, window) = (metrics.queue_depth("prompt"), metrics.queue_depth("window"));
        lanes.try_push(Priority::Window, vec![1, 2, 3], 8).unwrap();
        lanes.try_push(Priority::Prompt, vec![4], 8).unwrap();
        assert_eq!((prompt.get(), window.get()), (1, 3));
        assert!(lanes.try_push(Priority::Window, vec![5; 6], 8).is_err(), "over the cap: refused whole");
        assert_eq!(window.get(), 3, "a refused push leaves the depth");
        assert_eq!(lanes.pop(None), Some((Priority::Prompt, 4)), "the prompt lane first");
        assert_eq!((prompt.get(), window.get()), (0, 3));
        while lanes.pop(Some(Instant::now())).is_some() {}
        assert_eq!((prompt.get(), window.get()), (0, 0));
    }

    /// Records the texts in the order they were encoded (a text's ids are its bytes).
    struct Order(Arc<Mutex<Vec<String>>>, Duration);

    impl Encoder for Order {
        fn dim(&self) -> usize {
            2
        }
        fn tokenizer(&self) -> Tokenizer {
            crate::byte_tokenizer()
        }
        fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
            std::thread::sleep(self.1);
            let mut order = self.0.lock().unwrap();
            order.extend(batch.iter().map(|ids| ids.iter().map(|&b| b as u8 as char).collect::<String>()));
            Ok(batch.iter().map(|ids| vec![ids.len() as f32, 1.0]).collect())
        }
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prompt_queued_after_100_windows_is_answered_before_most_of_them() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let q = EmbedQueue::start(Box::new(Order(order.clone(), Duration::from_millis(10))), policy(4, 1024), EncoderMetrics::default());
        let windows = {
            let q = q.clone();
            tokio::spawn(async move { q.embed_windows((0..100).map(|i| format!("w{i}")).collect(), far()).await })
        };
        while order.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(q.embed("prompt".into()).await.unwrap().vector, vec![6.0, 1.0]);
        let done = windows.await.unwrap().unwrap();
        assert!(done.iter().all(Option::is_some) && done.len() == 100);
        let order = order.lock().unwrap();
        let at = order.iter().position(|t| t == "prompt").unwrap();
        // The batches already run while this test thread got to it, the one running, the windows
        // already tokenised; without the lanes it would be 100.
        assert!(at < 30, "the prompt was encoded after {at} of the 100 windows: {order:?}");
        let windows: Vec<&String> = order.iter().filter(|t| *t != "prompt").collect();
        assert!(windows.iter().zip(0..).all(|(w, i)| **w == format!("w{i}")), "windows keep their order");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_are_admitted_all_or_none_and_never_take_the_prompts_room() {
        let q = EmbedQueue::start(Box::new(Order(Default::default(), Duration::from_millis(20))), policy(1, 8), EncoderMetrics::default());
        let too_many = q.embed_windows((0..9).map(|i| format!("w{i}")).collect(), far()).await;
        assert!(matches!(too_many, Err(EmbedError::Overloaded)), "9 windows in a lane of 8");
        let fits = {
            let q = q.clone();
            tokio::spawn(async move { q.embed_windows((0..8).map(|i| format!("w{i}")).collect(), far()).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(q.embed("prompt".into()).await.is_ok(), "the window lane is full, the prompt lane is not");
        assert_eq!(fits.await.unwrap().unwrap().len(), 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_not_done_by_the_deadline_are_left_out_and_dropped() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let q = EmbedQueue::start(Box::new(Order(order.clone(), Duration::from_millis(20))), policy(1, 64), EncoderMetrics::default());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(70);
        let done = q.embed_windows((0..40).map(|i| format!("w{i}")).collect(), deadline).await.unwrap();
        assert_eq!(done.len(), 40);
        let judged = done.iter().filter(|d| d.is_some()).count();
        assert!((1..10).contains(&judged), "{judged} of 40 windows in 70 ms at 20 ms each");
        assert!(done[..judged].iter().all(Option::is_some), "the first ones");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let encoded = order.lock().unwrap().len();
        assert!(encoded < 20, "the abandoned windows are skipped, not encoded: {encoded}");
    }

    /// A pass costs 100 µs per padded token; records each pass's (texts, padded tokens).
    struct PerToken(Arc<Mutex<Vec<(usize, usize)>>>);

    impl Encoder for PerToken {
        fn dim(&self) -> usize {
            2
        }
        fn tokenizer(&self) -> Tokenizer {
            crate::byte_tokenizer()
        }
        fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
            let padded = batch.len() * batch.iter().map(Vec::len).max().unwrap_or(0);
            std::thread::sleep(Duration::from_micros(100 * padded as u64));
            self.0.lock().unwrap().push((batch.len(), padded));
            Ok(batch.iter().map(|ids| vec![ids.len() as f32, 1.0]).collect())
        }
    }

    /// While a 50 ms pass runs, a short prompt and three long ones queue. Under a 30 ms limit no
    /// later pass is planned over it (the short one is not padded to the long ones' length, and
    /// two long ones do not share a pass); with no limit all four share one 80 ms pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_stops_growing_before_its_pass_would_outlast_max_pass() {
        for (max_pass, expect_split) in [(Duration::from_millis(30), true), (Duration::ZERO, false)] {
            let passes = Arc::new(Mutex::new(Vec::new()));
            let q = EmbedQueue::start(Box::new(PerToken(passes.clone())), BatchPolicy { max_pass, ..policy(8, 64) }, EncoderMetrics::default());
            let gate = { let q = q.clone(); tokio::spawn(async move { q.embed("g".repeat(500)).await }) };
            tokio::time::sleep(Duration::from_millis(10)).await; // the gate is in its pass
            let got = embed_all(&q, vec!["s".repeat(10), "a".repeat(200), "b".repeat(200), "c".repeat(200)]).await;
            assert!(got.iter().all(Result::is_ok) && gate.await.unwrap().is_ok());
            let passes = passes.lock().unwrap();
            let after: Vec<_> = passes.iter().skip(1).copied().collect();
            assert_eq!(after.iter().map(|p| p.0).sum::<usize>(), 4, "{passes:?}");
            if expect_split {
                assert!(after.iter().all(|&(n, padded)| n == 1 || padded <= 300), "a pass over 30 ms: {passes:?}");
            } else {
                assert!(after.iter().any(|&(_, padded)| padded > 300), "no limit: the queued prompts share a pass: {passes:?}");
            }
        }
    }
}
