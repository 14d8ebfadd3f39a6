//! Classification metrics: accuracy, per-class precision/recall/F1/support, macro-F1 and a
//! compact confusion matrix. Used by `vane train` (held-out report) and `eval`.

use std::fmt::Write as _;

/// Scores of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many examples truly belong to the class.
    pub support: usize,
    /// How many examples were predicted as the class.
    pub predicted: usize,
}

/// A confusion matrix over `labels`: `confusion[truth][predicted]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub labels: Vec<String>,
    pub confusion: Vec<Vec<usize>>,
}

impl Report {
    /// `truth` and `predicted` are indices into `labels`, pairwise; extra elements of the longer
    /// slice are ignored. Indices out of range are a programming error and panic.
    pub fn new(labels: Vec<String>, truth: &[usize], predicted: &[usize]) -> Report {
        let k = labels.len();
        let mut confusion = vec![vec![0; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        Report { labels, confusion }
    }

    pub fn total(&self) -> usize {
        self.confusion.iter().flatten().sum()
    }

    /// Fraction of examples predicted correctly (0 when there are none).
    pub fn accuracy(&self) -> f64 {
        let correct: usize = (0..self.labels.len()).map(|i| self.confusion[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Per-class scores, in label order. A class never predicted has precision 0; one with no
    /// examples has recall 0 (as scikit-learn with `zero_division=0`).
    pub fn per_class(&self) -> Vec<ClassScores> {
        let k = self.labels.len();
        (0..k)
            .map(|c| {
                let tp = self.confusion[c][c];
                let support: usize = self.confusion[c].iter().sum();
                let predicted: usize = (0..k).map(|t| self.confusion[t][c]).sum();
                let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassScores { precision, recall, f1, support, predicted }
            })
            .collect()
    }

    /// Unweighted mean F1 over the classes that occur in the truth or the predictions
    /// (a label neither seen nor predicted does not count).
    pub fn macro_f1(&self) -> f64 {
        let scores: Vec<f64> = self.per_class().iter().filter(|s| s.support + s.predicted > 0).map(|s| s.f1).collect();
        if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 }
    }

    /// `accuracy=<x> macro_f1=<y>`, four decimals.
    pub fn summary(&self) -> String {
        format!("accuracy={:.4} macro_f1={:.4}", self.accuracy(), self.macro_f1())
    }

    /// The per-class table, then the confusion matrix (rows: truth, columns: predicted, headed
    /// by label abbreviations), then the example count and, as the last line, [`Report::summary`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self.labels.iter().map(String::len).max().unwrap_or(5).clamp(5, 28);
        let _ = writeln!(out, "{:width$}  precision  recall     f1  support", "label");
        for (label, s) in self.labels.iter().zip(self.per_class()) {
            let _ = writeln!(out, "{:width$}  {:9.4}  {:6.4}  {:5.4}  {:7}", clip(label, width), s.precision, s.recall, s.f1, s.support);
        }
        let abbrevs = abbreviations(&self.labels);
        let col = abbrevs.iter().map(String::len).max().unwrap_or(1).max(self.total().to_string().len()).max(3);
        let _ = writeln!(out, "\nconfusion (rows: truth, columns: predicted)");
        let _ = write!(out, "{:width$}", "");
        for a in &abbrevs {
            let _ = write!(out, " {a:>col$}");
        }
        out.push('\n');
        for (label, row) in self.labels.iter().zip(&self.confusion) {
            let _ = write!(out, "{:width$}", clip(label, width));
            for n in row {
                let _ = write!(out, " {n:>col$}");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "\nexamples={}", self.total());
        let _ = writeln!(out, "{}", self.summary());
        out
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn clip(s: &str, width: usize) -> &str {
    match s.char_indices().nth(width) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Short column headers: the first four characters of each label ("computer science" ->
/// "comp"), or its index when two labels would share one.
pub fn abbreviations(labels: &[String]) -> Vec<String> {
    let short: Vec<String> = labels.iter().map(|l| l.chars().filter(|c| !c.is_whitespace()).take(4).collect()).collect();
    short
        .iter()
        .enumerate()
        .map(|(i, s)| if s.is_empty() || short.iter().filter(|o| *o == s).count() > 1 { i.to_string() } else { s.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn metrics_match_hand_computed_tables() {
        struct Case {
            name: &'static str,
            k: usize,
            truth: Vec<usize>,
            pred: Vec<usize>,
            accuracy: f64,
            macro_f1: f64,
            /// (precision, recall, f1, support) per class
            classes: Vec<(f64, f64, f64, usize)>,
        }
        let cases = [
            Case { name: "perfect", k: 2, truth: vec![0, 1, 1], pred: vec![0, 1, 1], accuracy: 1.0, macro_f1: 1.0, classes: vec![(1.0, 1.0, 1.0, 1), (1.0, 1.0, 1.0, 2)] },
            Case {
                // class 0: tp 2, fp 1, fn 1 -> p 2/3 r 2/3; class 1: tp 1, fp 1, fn 1 -> p 1/2 r 1/2;
                // class 2: tp 1, fp 0, fn 0.
                name: "three classes",
                k: 3,
                truth: vec![0, 0, 0, 1, 1, 2],
                pred: vec![0, 0, 1, 1, 0, 2],
                accuracy: 4.0 / 6.0,
                macro_f1: (2.0 / 3.0 + 0.5 + 1.0) / 3.0,
                classes: vec![(2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 3), (0.5, 0.5, 0.5, 2), (1.0, 1.0, 1.0, 1)],
            },
            Case {
                // Everything predicted as class 0: class 1 has precision 0 (never predicted).
                name: "one class predicted",
                k: 2,
                truth: vec![0, 0, 0, 1],
                pred: vec![0, 0, 0, 0],
                accuracy: 0.75,
                macro_f1: (2.0 * 0.75 / 1.75) / 2.0,
                classes: vec![(0.75, 1.0, 2.0 * 0.75 / 1.75, 3), (0.0, 0.0, 0.0, 1)],
            },
            Case {
                // Label 2 neither occurs nor is predicted: it does not count in macro-F1.
                name: "absent label",
                k: 3,
                truth: vec![0, 1],
                pred: vec![0, 0],
                accuracy: 0.5,
                macro_f1: (2.0 / 3.0 + 0.0) / 2.0,
                classes: vec![(0.5, 1.0, 2.0 / 3.0, 1), (0.0, 0.0, 0.0, 1), (0.0, 0.0, 0.0, 0)],
            },
            Case { name: "empty", k: 2, truth: vec![], pred: vec![], accuracy: 0.0, macro_f1: 0.0, classes: vec![(0.0, 0.0, 0.0, 0), (0.0, 0.0, 0.0, 0)] },
        ];
        for c in cases {
            let names: Vec<String> = (0..c.k).map(|i| format!("c{i}")).collect();
            let r = Report::new(names, &c.truth, &c.pred);
            assert!(close(r.accuracy(), c.accuracy), "{}: accuracy {}", c.name, r.accuracy());
            assert!(close(r.macro_f1(), c.macro_f1), "{}: macro_f1 {}", c.name, r.macro_f1());
            for (i, (s, want)) in r.per_class().iter().zip(&c.classes).enumerate() {
                let got = (s.precision, s.recall, s.f1, s.support);
                assert!(close(got.0, want.0) && close(got.1, want.1) && close(got.2, want.2) && got.3 == want.3, "{} class {i}: {got:?} != {want:?}", c.name);
            }
        }
    }

    #[test]
    fn confusion_matrix_rows_are_truth() {
        let r = Report::new(labels(&["a", "b"]), &[0, 0, 1], &[1, 0, 1]);
        assert_eq!(r.confusion, vec![vec![1, 1], vec![0, 1]]);
        assert_eq!(r.total(), 3);
    }

    #[test]
    fn abbreviations_are_short_and_unique() {
        let cases: [(&[&str], &[&str]); 3] = [
            (&["computer science", "chemistry", "law"], &["comp", "chem", "law"]),
            (&["physics", "physiology", "math"], &["0", "1", "math"]),
            (&["0", "1"], &["0", "1"]),
        ];
        for (input, want) in cases {
            assert_eq!(abbreviations(&labels(input)), labels(want), "{input:?}");
        }
    }

    #[test]
    fn render_shows_scores_matrix_and_summary() {
        let r = Report::new(labels(&["computer science", "law"]), &[0, 0, 1], &[0, 1, 1]);
        let text = r.render();
        assert!(text.contains("computer science"), "{text}");
        assert!(text.contains(" comp"), "{text}");
        assert!(text.trim_end().ends_with("examples=3\naccuracy=0.6667 macro_f1=0.6667"), "{text}");
    }
}
