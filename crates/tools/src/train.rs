//! Training heads: softmax regression or a one-hidden-layer MLP, cross-entropy with L2
//! regularisation, mini-batch Adam with a cosine learning-rate decay, optional inverse-frequency
//! class weights. Deterministic: every random choice (shuffles, initial weights, dropout) comes
//! from a seeded SplitMix64.

use vane_model::head::{Kind, Params, axpy, softmax_in_place};

use crate::report::Report;

/// SplitMix64: tiny, fast, statistically fine for shuffling and initialisation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, n) (0 < n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Splits example indices into (kept, held out) so that every class keeps its share: each
/// class holds out `round(n * fraction)` examples (at least one of a class with two or more
/// when `fraction > 0`, and never all of them). Both lists are in ascending order.
pub fn stratified_split(labels: &[usize], classes: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let (mut kept, mut held) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        rng.shuffle(&mut idx);
        let n = idx.len();
        let mut h = (n as f64 * fraction).round() as usize;
        if fraction > 0.0 && n >= 2 {
            h = h.clamp(1, n - 1);
        }
        held.extend_from_slice(&idx[..h.min(n)]);
        kept.extend_from_slice(&idx[h.min(n)..]);
    }
    kept.sort_unstable();
    held.sort_unstable();
    (kept, held)
}

/// At most `max` randomly chosen examples of each class (ascending indices).
pub fn cap_per_class(labels: &[usize], classes: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        rng.shuffle(&mut idx);
        out.extend_from_slice(&idx[..idx.len().min(max)]);
    }
    out.sort_unstable();
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub kind: Kind,
    /// Hidden units (MLP).
    pub hidden: usize,
    /// Length of the learning-rate schedule, in passes over the data.
    pub epochs: usize,
    pub batch: usize,
    /// Adam's initial learning rate (decays to a tenth along a cosine).
    pub lr: f32,
    /// L2 penalty `l2/2 * |W|^2` on the weights (not the biases).
    pub l2: f32,
    /// Dropout on the hidden layer (MLP), 0 for none.
    pub dropout: f32,
    /// Weight each example by `n / (classes * n_class)`.
    pub class_weight: bool,
    pub seed: u64,
}

impl TrainConfig {
    /// Settings that work well for sentence embeddings of a few hundred values.
    pub fn defaults(kind: Kind) -> TrainConfig {
        match kind {
            Kind::Softmax => TrainConfig { kind, hidden: 0, epochs: 60, batch: 64, lr: 0.01, l2: 1e-4, dropout: 0.0, class_weight: false, seed: 42 },
            Kind::Mlp => TrainConfig { kind, hidden: 256, epochs: 60, batch: 64, lr: 2e-3, l2: 1e-4, dropout: 0.5, class_weight: false, seed: 42 },
        }
    }

    /// For the head file's `meta.training`.
    pub fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), self.kind.to_string().into());
        if self.kind == Kind::Mlp {
            m.insert("hidden".into(), self.hidden.into());
            m.insert("dropout".into(), num(self.dropout));
        }
        m.insert("epochs".into(), self.epochs.into());
        m.insert("batch".into(), self.batch.into());
        m.insert("lr".into(), num(self.lr));
        m.insert("l2".into(), num(self.l2));
        m.insert("class_weight".into(), (if self.class_weight { "balanced" } else { "none" }).into());
        m
    }
}

/// `0.0001`, not the f64 widening `9.999999747378752e-5`.
fn num(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().map_or(serde_json::Value::Null, Into::into)
}

/// Examples: embeddings and their class indices, addressed through index lists.
pub struct Data<'a> {
    pub x: &'a [Vec<f32>],
    pub y: &'a [usize],
    pub classes: usize,
}

pub struct Trained {
    pub params: Params,
    /// The epoch (1-based) whose parameters were kept: the best on the validation examples,
    /// or the last when there were none.
    pub best_epoch: usize,
    /// Validation (accuracy, macro-F1) after each epoch (empty without validation examples).
    pub history: Vec<(f64, f64)>,
}

/// Trains on `train` for `cfg.epochs` epochs, or only the first `stop_after` of them. With
/// `validation` examples, keeps the parameters of the epoch that scored best on them.
pub fn train(cfg: &TrainConfig, data: &Data, train: &[usize], validation: &[usize], stop_after: Option<usize>) -> Trained {
    let dim = data.x.first().map_or(0, Vec::len);
    let mut rng = Rng::new(cfg.seed);
    let mut params = Params::zeros(cfg.kind, dim, cfg.hidden.max(1), data.classes);
    let [w1, _, w2, _] = params.offsets();
    if cfg.kind == Kind::Mlp {
        // He initialisation for the ReLU layer, Glorot for the output layer.
        let a = (6.0 / dim as f32).sqrt();
        params.data[w1.clone()].iter_mut().for_each(|w| *w = (rng.next_f32() * 2.0 - 1.0) * a);
        let a = (6.0 / (params.hidden + data.classes) as f32).sqrt();
        params.data[w2.clone()].iter_mut().for_each(|w| *w = (rng.next_f32() * 2.0 - 1.0) * a);
    }
    let class_weights = class_weights(data, train, cfg.class_weight);
    let mut adam = Adam::new(params.data.len());
    let mut grad = vec![0.0f32; params.data.len()];
    let mut scratch = Scratch::new(&params);
    let mut order = train.to_vec();
    let batch = cfg.batch.max(1);
    let steps_per_epoch = order.len().div_ceil(batch);
    let total_steps = (steps_per_epoch * cfg.epochs).max(1);
    let mut step = 0usize;
    let (mut best, mut best_epoch, mut history) = (None::<(f64, f64, Vec<f32>)>, cfg.epochs, Vec::new());
    let last = stop_after.unwrap_or(cfg.epochs).min(cfg.epochs);
    for epoch in 1..=last {
        rng.shuffle(&mut order);
        for chunk in order.chunks(batch) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut weight_sum = 0.0;
            for &i in chunk {
                let w = class_weights[data.y[i]];
                weight_sum += w;
                accumulate(&params, &data.x[i], data.y[i], w, cfg.dropout, &mut rng, &mut scratch, &mut grad);
            }
            let norm = 1.0 / weight_sum.max(f32::MIN_POSITIVE);
            grad.iter_mut().for_each(|g| *g *= norm);
            for r in [w1.clone(), w2.clone()] {
                for (g, w) in grad[r.clone()].iter_mut().zip(&params.data[r]) {
                    *g += cfg.l2 * w;
                }
            }
            let progress = step as f32 / total_steps as f32;
            let lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()));
            adam.step(&mut params.data, &grad, lr);
            step += 1;
        }
        if !validation.is_empty() {
            let r = report(&params, data, validation);
            let (acc, f1) = (r.accuracy(), r.macro_f1());
            history.push((acc, f1));
            if best.as_ref().is_none_or(|b| (acc, f1) > (b.0, b.1)) {
                best = Some((acc, f1, params.data.clone()));
                best_epoch = epoch;
            }
        } else {
            best_epoch = epoch;
        }
    }
    if let Some((_, _, data)) = best {
        params.data = data;
    }
    Trained { params, best_epoch, history }
}

/// The report of `params` on the examples `idx`.
pub fn report(params: &Params, data: &Data, idx: &[usize]) -> Report {
    let labels = (0..data.classes).map(|c| c.to_string()).collect();
    let predicted: Vec<usize> = idx.iter().map(|&i| vane_model::head::argmax(&params.predict(&data.x[i])).0).collect();
    let truth: Vec<usize> = idx.iter().map(|&i| data.y[i]).collect();
    Report::new(labels, &truth, &predicted)
}

fn class_weights(data: &Data, idx: &[usize], balanced: bool) -> Vec<f32> {
    let mut counts = vec![0usize; data.classes];
    for &i in idx {
        counts[data.y[i]] += 1;
    }
    let present = counts.iter().filter(|&&n| n > 0).count().max(1);
    counts.iter().map(|&n| if balanced && n > 0 { idx.len() as f32 / (present * n) as f32 } else { 1.0 }).collect()
}

struct Scratch {
    hidden: Vec<f32>,
    dhidden: Vec<f32>,
    logits: Vec<f32>,
}

impl Scratch {
    fn new(p: &Params) -> Scratch {
        Scratch { hidden: vec![0.0; p.hidden], dhidden: vec![0.0; p.hidden], logits: vec![0.0; p.classes] }
    }
}

/// Adds `weight *` the cross-entropy gradient of one example to `grad`.
#[allow(clippy::too_many_arguments)]
fn accumulate(p: &Params, x: &[f32], y: usize, weight: f32, dropout: f32, rng: &mut Rng, s: &mut Scratch, grad: &mut [f32]) {
    p.forward(x, &mut s.hidden, &mut s.logits);
    let keep = 1.0 - dropout;
    if p.kind == Kind::Mlp && dropout > 0.0 {
        // Inverted dropout: the logits are recomputed from the thinned hidden layer.
        for h in s.hidden.iter_mut() {
            *h = if rng.next_f32() < keep { *h / keep } else { 0.0 };
        }
        let [_, _, w2, b2] = p.offsets();
        for (c, l) in s.logits.iter_mut().enumerate() {
            *l = vane_model::dot(&p.data[w2.clone()][c * p.hidden..(c + 1) * p.hidden], &s.hidden) + p.data[b2.start + c];
        }
    }
    softmax_in_place(&mut s.logits);
    s.logits[y] -= 1.0;
    s.logits.iter_mut().for_each(|d| *d *= weight);
    let d = &s.logits;
    let [w1, b1, w2, b2] = p.offsets();
    let n = p.out_in();
    let input: &[f32] = if p.kind == Kind::Mlp { &s.hidden } else { x };
    {
        let (gw2, gb2) = grad.split_at_mut(b2.start);
        for (c, &dc) in d.iter().enumerate() {
            axpy(&mut gw2[w2.start + c * n..w2.start + (c + 1) * n], dc, input);
            gb2[c] += dc;
        }
    }
    if p.kind == Kind::Mlp {
        s.dhidden.iter_mut().for_each(|v| *v = 0.0);
        for (c, &dc) in d.iter().enumerate() {
            axpy(&mut s.dhidden, dc, &p.data[w2.start + c * n..w2.start + (c + 1) * n]);
        }
        let scale = if dropout > 0.0 { 1.0 / keep } else { 1.0 };
        for (j, (&h, &dh)) in s.hidden.iter().zip(&s.dhidden).enumerate() {
            if h > 0.0 {
                let dz = dh * scale;
                axpy(&mut grad[w1.start + j * p.dim..w1.start + (j + 1) * p.dim], dz, x);
                grad[b1.start + j] += dz;
            }
        }
    }
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    fn new(n: usize) -> Adam {
        Adam { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    fn step(&mut self, w: &mut [f32], g: &[f32], lr: f32) {
        self.t += 1;
        let c1 = 1.0 - Self::B1.powi(self.t);
        let c2 = 1.0 - Self::B2.powi(self.t);
        let alpha = lr * c2.sqrt() / c1;
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = Self::B1 * *m + (1.0 - Self::B1) * g;
            *v = Self::B2 * *v + (1.0 - Self::B2) * g * g;
            *w -= alpha * *m / (v.sqrt() + Self::EPS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated blobs in 8 dimensions, unit-normalised like real embeddings.
    fn blobs(per_class: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..per_class * 3 {
            let c = i % 3;
            let mut v: Vec<f32> = (0..8).map(|_| (rng.next_f32() - 0.5) * 0.6).collect();
            v[c * 2] += 1.0;
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            x.push(v.iter().map(|a| a / n).collect());
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn both_kinds_separate_a_linearly_separable_set() {
        let (x, y) = blobs(40, 7);
        let data = Data { x: &x, y: &y, classes: 3 };
        let (kept, held) = stratified_split(&y, 3, 0.25, 1);
        for kind in [Kind::Softmax, Kind::Mlp] {
            let cfg = TrainConfig { epochs: 30, batch: 16, ..TrainConfig::defaults(kind) };
            let t = train(&cfg, &data, &kept, &[], None);
            assert_eq!(report(&t.params, &data, &kept).accuracy(), 1.0, "{kind} on its training set");
            assert_eq!(report(&t.params, &data, &held).accuracy(), 1.0, "{kind} on held-out examples");
            assert_eq!(t.best_epoch, 30);
        }
    }

    #[test]
    fn training_is_deterministic_and_keeps_the_best_validation_epoch() {
        let (x, y) = blobs(30, 3);
        let data = Data { x: &x, y: &y, classes: 3 };
        let (kept, val) = stratified_split(&y, 3, 0.2, 9);
        let cfg = TrainConfig { epochs: 8, class_weight: true, ..TrainConfig::defaults(Kind::Mlp) };
        let a = train(&cfg, &data, &kept, &val, None);
        let b = train(&cfg, &data, &kept, &val, None);
        assert_eq!(a.params, b.params);
        assert_eq!(a.history.len(), 8);
        let best = a.history[a.best_epoch - 1];
        assert!(a.history.iter().all(|h| *h <= best), "{:?} best {}", a.history, a.best_epoch);
        let c = train(&TrainConfig { seed: 43, ..cfg }, &data, &kept, &val, None);
        assert_ne!(a.params, c.params);
    }

    #[test]
    fn stratified_split_keeps_class_shares() {
        let y: Vec<usize> = (0..100).map(|i| if i < 80 { 0 } else if i < 98 { 1 } else { 2 }).collect();
        let (kept, held) = stratified_split(&y, 3, 0.2, 5);
        let count = |idx: &[usize], c| idx.iter().filter(|&&i| y[i] == c).count();
        assert_eq!([count(&held, 0), count(&held, 1), count(&held, 2)], [16, 4, 1]);
        assert_eq!(kept.len() + held.len(), 100);
        assert!(kept.iter().all(|i| !held.contains(i)));
        assert_eq!(stratified_split(&y, 3, 0.2, 5), (kept.clone(), held.clone()));
        assert_ne!(stratified_split(&y, 3, 0.2, 6).1, held);
        assert_eq!(stratified_split(&y, 3, 0.0, 5).1, Vec::<usize>::new());
        let capped = cap_per_class(&y, 3, 10, 1);
        assert_eq!([count(&capped, 0), count(&capped, 1), count(&capped, 2)], [10, 10, 2]);
    }

    #[test]
    fn class_weights_are_inverse_frequency() {
        let x = vec![vec![0.0]; 4];
        let y = vec![0, 0, 0, 1];
        let data = Data { x: &x, y: &y, classes: 2 };
        assert_eq!(class_weights(&data, &[0, 1, 2, 3], true), vec![4.0 / 6.0, 2.0]);
        assert_eq!(class_weights(&data, &[0, 1, 2, 3], false), vec![1.0, 1.0]);
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[r.below(4)] += 1;
        }
        assert!(counts.iter().all(|&c| (900..1100).contains(&c)), "{counts:?}");
        let f = r.next_f32();
        assert!((0.0..1.0).contains(&f));
    }
}
