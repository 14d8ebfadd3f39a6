//! `eval-cache`: how well the semantic cache's rule — cosine ≥ threshold, and the near-duplicate
//! guard agrees — tells duplicate questions from different ones, measured on labelled pairs. A
//! pair counts as a hit when the second question would be answered with the first one's cached
//! answer; precision is the share of hits that were true duplicates, recall the share of true
//! duplicates that hit.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use vane_cache::guard;
use vane_model::{Reading, Unread};

/// One labelled pair: `cached` is the question in the cache, `asked` the new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub cached: String,
    pub asked: String,
    pub duplicate: bool,
}

/// Which JSON fields hold the two questions and the label.
pub struct Fields<'a> {
    pub cached: &'a str,
    pub asked: &'a str,
    pub label: &'a str,
}

/// Reads labelled pairs; rows lacking a question or a readable label are skipped and counted.
pub fn read_pairs(path: &Path, fields: &Fields) -> anyhow::Result<(Vec<Pair>, usize)> {
    let (mut pairs, mut skipped) = (Vec::new(), 0);
    crate::dataset::for_each_row(path, |_, row, _| {
        let text = |f: &str| row.get(f).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(str::to_string);
        match (text(fields.cached), text(fields.asked), row.get(fields.label).and_then(is_duplicate)) {
            (Some(cached), Some(asked), Some(duplicate)) => pairs.push(Pair { cached, asked, duplicate }),
            _ => skipped += 1,
        }
    })?;
    Ok((pairs, skipped))
}

/// 1/0, true/false, "1"/"0", "true"/"false", "yes"/"no".
fn is_duplicate(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|x| x != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(true),
            "0" | "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `limit` of `n` indices, the same ones on every run (a seeded shuffle), in file order.
pub fn subsample(n: usize, limit: Option<usize>, seed: u64) -> Vec<usize> {
    let Some(limit) = limit.filter(|&l| l < n) else { return (0..n).collect() };
    let mut rng = crate::train::Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut all: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        all.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut kept = all[..limit].to_vec();
    kept.sort_unstable();
    kept
}

/// A pair as the cache sees it: its similarity, whether the encoder read both sides (the
/// sidecar never matches a prompt it could not read, nor stores one for matching), and why the
/// guard refuses it (if it does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub similarity: f32,
    pub duplicate: bool,
    pub unread: Option<Unread>,
    pub conflict: Option<&'static str>,
}

impl Scored {
    /// `readings` are the cached and the asked prompt's, `max_unknown_share` the sidecar's
    /// `cache.max_unknown_share`.
    pub fn new(pair: &Pair, similarity: f32, readings: (Reading, Reading), max_unknown_share: f32) -> Scored {
        let unread = readings.0.unread(max_unknown_share).or(readings.1.unread(max_unknown_share));
        Scored { similarity, duplicate: pair.duplicate, unread, conflict: guard::conflict(&pair.cached, &pair.asked) }
    }

    /// Why the sidecar would not serve this pair as a hit, whatever the similarity: the
    /// encoder's reading first, then the guard.
    pub fn refusal(&self) -> Option<&'static str> {
        self.unread.map(Unread::name).or(self.conflict)
    }

    fn hit(&self, threshold: f32, guarded: bool) -> bool {
        self.similarity >= threshold && self.unread.is_none() && !(guarded && self.conflict.is_some())
    }
}

/// Hits and misses at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub true_hits: usize,
    pub false_hits: usize,
    pub duplicates: usize,
}

impl Counts {
    pub fn at(scored: &[Scored], threshold: f32, guarded: bool) -> Counts {
        let mut c = Counts::default();
        for s in scored {
            c.duplicates += usize::from(s.duplicate);
            if s.hit(threshold, guarded) {
                if s.duplicate {
                    c.true_hits += 1;
                } else {
                    c.false_hits += 1;
                }
            }
        }
        c
    }

    /// Share of hits that were duplicates; 1 when nothing hits (no wrong answer was served).
    pub fn precision(&self) -> f64 {
        let hits = self.true_hits + self.false_hits;
        if hits == 0 { 1.0 } else { self.true_hits as f64 / hits as f64 }
    }

    pub fn recall(&self) -> f64 {
        if self.duplicates == 0 { 0.0 } else { self.true_hits as f64 / self.duplicates as f64 }
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 }
    }
}

/// 0.70, 0.71, ..., 0.99, plus `extra` (the configured threshold) where it falls between.
pub fn grid(extra: f32) -> Vec<f32> {
    let mut g: Vec<f32> = (70..100).map(|i| i as f32 / 100.0).collect();
    if !g.iter().any(|t| (t - extra).abs() < 1e-6) {
        g.push(extra);
        g.sort_by(f32::total_cmp);
    }
    g
}

/// The lowest threshold of `grid` whose precision reaches `target` (with at least one hit).
pub fn lowest_reaching(scored: &[Scored], grid: &[f32], target: f64, guarded: bool) -> Option<(f32, Counts)> {
    grid.iter().map(|&t| (t, Counts::at(scored, t, guarded))).find(|(_, c)| c.true_hits > 0 && c.precision() >= target)
}

/// The full report; its last line is `threshold=<t> precision=<p> recall=<r>` at `default`, guard on.
pub fn render(scored: &[Scored], default: f32, target: f64) -> String {
    let mut out = String::new();
    let duplicates = scored.iter().filter(|s| s.duplicate).count();
    let _ = writeln!(out, "{} pairs, {duplicates} duplicates, {} different\n", scored.len(), scored.len() - duplicates);
    let _ = writeln!(out, "threshold | guard off: P     R     F1    | guard on: P     R     F1    | false hits removed | true hits lost");
    let g = grid(default);
    for &t in &g {
        let (off, on) = (Counts::at(scored, t, false), Counts::at(scored, t, true));
        let mark = if (t - default).abs() < 1e-6 { " <- default" } else { "" };
        let _ = writeln!(
            out,
            "{t:9.2} | {:16.3} {:.3} {:.3} | {:15.3} {:.3} {:.3} | {:18} | {:14}{mark}",
            off.precision(),
            off.recall(),
            off.f1(),
            on.precision(),
            on.recall(),
            on.f1(),
            off.false_hits - on.false_hits,
            off.true_hits - on.true_hits
        );
    }
    out.push('\n');
    for (guarded, name) in [(false, "off"), (true, "on")] {
        match lowest_reaching(scored, &g, target, guarded) {
            Some((t, c)) => {
                let _ = writeln!(out, "guard {name}: lowest threshold with precision >= {target}: {t:.2} (P {:.3}, R {:.3}, F1 {:.3})", c.precision(), c.recall(), c.f1());
            }
            None => {
                let _ = writeln!(out, "guard {name}: no threshold in {:.2}..{:.2} reaches precision {target}", g[0], g[g.len() - 1]);
            }
        }
    }
    let (off, on) = (Counts::at(scored, default, false), Counts::at(scored, default, true));
    let _ = writeln!(
        out,
        "\nat the default threshold {default:.2} the guard removes {} of {} false hits and costs {} of {} true hits",
        off.false_hits - on.false_hits,
        off.false_hits,
        off.true_hits - on.true_hits,
        off.true_hits
    );
    let unread = scored.iter().filter(|s| s.unread.is_some()).count();
    let _ = writeln!(out, "pairs the encoder could not read (never a hit, guard on or off): {unread} of {}", scored.len());
    let _ = writeln!(out, "refusals above the default threshold, by rule (false hits removed / true hits lost):");
    let mut reasons: Vec<(&str, usize, usize)> = Vec::new();
    for s in scored.iter().filter(|s| s.similarity >= default) {
        if let Some(r) = s.refusal() {
            let i = reasons.iter().position(|x| x.0 == r).unwrap_or_else(|| {
                reasons.push((r, 0, 0));
                reasons.len() - 1
            });
            if s.duplicate { reasons[i].2 += 1 } else { reasons[i].1 += 1 }
        }
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1 + r.2));
    for (r, removed, lost) in reasons {
        let _ = writeln!(out, "  {r:14} {removed:6} / {lost}");
    }
    let _ = writeln!(out, "threshold={default:.2} precision={:.4} recall={:.4}", on.precision(), on.recall());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(similarity: f32, duplicate: bool, conflict: Option<&'static str>) -> Scored {
        Scored { similarity, duplicate, unread: None, conflict }
    }

    #[test]
    fn counts_hits_by_threshold_and_guard() {
        let scored = [s(0.95, true, None), s(0.92, false, Some("numbers")), s(0.91, true, Some("negation")), s(0.85, true, None), s(0.80, false, None)];
        let off = Counts::at(&scored, 0.9, false);
        assert_eq!((off.true_hits, off.false_hits, off.duplicates), (2, 1, 3));
        let on = Counts::at(&scored, 0.9, true);
        assert_eq!((on.true_hits, on.false_hits), (1, 0));
        assert!((on.precision() - 1.0).abs() < 1e-12 && (on.recall() - 1.0 / 3.0).abs() < 1e-12);
        assert!((off.precision() - 2.0 / 3.0).abs() < 1e-12);
        let low = Counts::at(&scored, 0.8, false);
        assert_eq!((low.true_hits, low.false_hits), (3, 2));
    }

    #[test]
    fn a_pair_the_encoder_could_not_read_is_never_a_hit() {
        let pair = Pair { cached: "秦朝是哪一年建立的？".into(), asked: "唐朝是哪一年建立的？".into(), duplicate: false };
        let unknown = Reading { tokens: 10, unknown: 5, ..Reading::default() };
        let read = Reading { tokens: 10, ..Reading::default() };
        let scored = Scored::new(&pair, 1.0, (read, unknown), 0.05);
        assert_eq!(scored.refusal(), Some("unknown_tokens"), "the reading is named before the guard's cjk rule");
        assert!(!scored.hit(0.5, false), "not even with the guard off");
        let long = Scored::new(&pair, 1.0, (Reading { truncated: true, ..read }, read), 0.05);
        assert_eq!(long.refusal(), Some("truncated"));
        let readable = Scored::new(&pair, 1.0, (read, read), 0.05);
        assert_eq!(readable.refusal(), Some("cjk"));
        assert!(readable.hit(0.5, false) && !readable.hit(0.5, true));
    }

    #[test]
    fn lowest_threshold_reaching_a_precision() {
        let scored = [s(0.95, true, None), s(0.90, false, None), s(0.85, true, None), s(0.80, false, Some("numbers"))];
        let g = grid(0.9);
        assert_eq!(lowest_reaching(&scored, &g, 0.99, false).map(|x| x.0), Some(0.91));
        assert_eq!(lowest_reaching(&scored, &g, 0.6, true).map(|x| x.0), Some(0.7), "2 of 3 hits at 0.70 with the guard");
        assert_eq!(lowest_reaching(&[s(0.5, true, None)], &g, 0.5, false), None, "nothing hits");
    }

    #[test]
    fn report_ends_with_the_default_line() {
        let scored = [s(0.95, true, None), s(0.93, false, Some("numbers")), s(0.70, true, None)];
        let text = render(&scored, 0.92, 0.9);
        assert_eq!(text.lines().last(), Some("threshold=0.92 precision=1.0000 recall=0.5000"), "{text}");
        assert!(text.contains("removes 1 of 1 false hits and costs 0 of 1 true hits"), "{text}");
    }

    #[test]
    fn subsample_is_deterministic_and_bounded() {
        let a = subsample(1000, Some(100), 7);
        assert_eq!(a, subsample(1000, Some(100), 7));
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(a, (0..100).collect::<Vec<_>>(), "spread over the file, not its head");
        assert_eq!(subsample(5, Some(10), 7), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn labels_in_their_usual_spellings() {
        for (v, want) in [(serde_json::json!(1), Some(true)), (serde_json::json!(0), Some(false)), (serde_json::json!("true"), Some(true)), (serde_json::json!(false), Some(false)), (serde_json::json!("maybe"), None)] {
            assert_eq!(is_duplicate(&v), want, "{v}");
        }
    }
}
