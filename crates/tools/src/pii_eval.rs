//! `eval-pii`: precision and recall of [`vane_routing::pii::detect`] on presidio-shaped JSONL
//! (`{"text": ..., "spans": [{"type": "EMAIL_ADDRESS", "start": 3, "end": 14}, ...]}`, offsets
//! in characters). A finding counts as correct when it overlaps a labeled span of its type.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;

use vane_routing::pii::{PiiType, detect};

#[derive(Deserialize)]
struct Row {
    text: String,
    #[serde(default)]
    spans: Vec<Span>,
}

#[derive(Deserialize)]
struct Span {
    #[serde(rename = "type")]
    kind: String,
    start: usize,
    end: usize,
}

/// Presidio's entity names for the types we detect; other labels are not scored.
fn our_type(label: &str) -> Option<PiiType> {
    Some(match label {
        "EMAIL_ADDRESS" => PiiType::Email,
        "IBAN_CODE" => PiiType::Iban,
        "CREDIT_CARD" => PiiType::CreditCard,
        "US_SSN" => PiiType::UsSsn,
        "IP_ADDRESS" => PiiType::IpAddress,
        "PHONE_NUMBER" => PiiType::Phone,
        _ => return None,
    })
}

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Scores JSONL text; returns the report, whose last line is `precision=<p> recall=<r>`.
pub fn evaluate(jsonl: &str) -> Result<String, String> {
    let mut counts: BTreeMap<PiiType, Counts> = PiiType::ALL.iter().map(|t| (*t, Counts::default())).collect();
    let mut rows = 0;
    for (n, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        rows += 1;
        // Character offsets → byte offsets.
        let mut bytes: Vec<usize> = row.text.char_indices().map(|(b, _)| b).collect();
        bytes.push(row.text.len());
        let gold: Vec<(PiiType, usize, usize)> = row
            .spans
            .iter()
            .filter_map(|s| Some((our_type(&s.kind)?, *bytes.get(s.start)?, *bytes.get(s.end)?)))
            .collect();
        let found = detect(&row.text);
        for f in &found {
            let c = counts.entry(f.kind).or_default();
            if gold.iter().any(|(k, s, e)| *k == f.kind && f.start < *e && *s < f.end) { c.tp += 1 } else { c.fp += 1 }
        }
        for (k, s, e) in &gold {
            if !found.iter().any(|f| f.kind == *k && f.start < *e && *s < f.end) {
                counts.entry(*k).or_default().fn_ += 1;
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "{rows} rows; a finding is correct when it overlaps a labeled span of its type\n");
    let _ = writeln!(out, "{:<12} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6}", "type", "precision", "recall", "f1", "tp", "fp", "fn");
    let mut total = Counts::default();
    for (kind, c) in &counts {
        let (p, r) = (ratio(c.tp, c.tp + c.fp), ratio(c.tp, c.tp + c.fn_));
        let f1 = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
        let _ = writeln!(out, "{:<12} {p:>9.4} {r:>9.4} {f1:>9.4} {:>6} {:>6} {:>6}", kind.name(), c.tp, c.fp, c.fn_);
        total.tp += c.tp;
        total.fp += c.fp;
        total.fn_ += c.fn_;
    }
    let _ = write!(out, "\nprecision={:.4} recall={:.4}", ratio(total.tp, total.tp + total.fp), ratio(total.tp, total.tp + total.fn_));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_overlaps_per_type_with_character_offsets() {
        let data = concat!(
            r#"{"text": "Šárka: a@b.io", "spans": [{"type": "EMAIL_ADDRESS", "start": 7, "end": 13}, {"type": "PERSON", "start": 0, "end": 5}]}"#, "\n",
            r#"{"text": "ip 10.0.0.1", "spans": []}"#, "\n",
            r#"{"text": "ssn 123-45-6789", "spans": [{"type": "US_SSN", "start": 4, "end": 15}, {"type": "EMAIL_ADDRESS", "start": 0, "end": 3}]}"#, "\n",
        );
        let report = evaluate(data).unwrap();
        let last = report.lines().last().unwrap();
        // tp: email, ssn; fp: ip; fn: the unfound email label.
        assert_eq!(last, "precision=0.6667 recall=0.6667", "{report}");
        assert!(report.contains("email"));
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert!(evaluate("{\"text\": \"x\"}\nnope").unwrap_err().starts_with("line 2"));
    }
}
