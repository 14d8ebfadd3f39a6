//! The near-duplicate guard: embeddings score "how do I turn on X" and "how do I turn off X" as
//! the same question, so a semantic match must also survive a few exact checks on the words.
//!
//! A cached prompt and a new one conflict when they differ in
//! - the numbers they contain (17 × 23 is not 17 × 24),
//! - negation (one says "not"/"never"/"n't", the other does not),
//! - a word for its opposite (on/off, begin/end, before/after, ...),
//! - direction ("Fahrenheit to Celsius" against "Celsius to Fahrenheit"),
//! - identifier-like tokens (hashes, ids, long words: the encoder maps words over 100 characters
//!   to one unknown token, so it cannot tell them apart at all).

use std::collections::BTreeMap;

/// Pairs of words whose swap flips the meaning of a question.
const OPPOSITES: &[(&str, &str)] = &[
    ("on", "off"), ("enable", "disable"), ("enabled", "disabled"), ("start", "stop"), ("begin", "end"),
    ("began", "ended"), ("beginning", "end"), ("open", "close"), ("before", "after"), ("increase", "decrease"),
    ("add", "remove"), ("install", "uninstall"), ("encrypt", "decrypt"), ("encode", "decode"), ("max", "min"),
    ("maximum", "minimum"), ("largest", "smallest"), ("highest", "lowest"), ("best", "worst"), ("buy", "sell"),
    ("true", "false"), ("import", "export"), ("upload", "download"), ("push", "pull"), ("win", "lose"),
    ("won", "lost"), ("north", "south"), ("east", "west"), ("hot", "cold"), ("positive", "negative"),
    ("above", "below"), ("inside", "outside"), ("first", "last"), ("more", "less"), ("allow", "deny"),
    ("lock", "unlock"), ("connect", "disconnect"), ("mount", "unmount"), ("show", "hide"), ("left", "right"),
];

const NEGATIONS: &[&str] = &["not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot"];

/// Words joining a "from → to" pair: their order is the question.
const DIRECTIONAL: &[&str] = &["to", "into", "from", "vs", "versus", "than"];

fn words(text: &str) -> Vec<String> {
    // "x squared" and "x^2" are the same number.
    let text = text.to_lowercase().replace(" squared", "^2").replace(" cubed", "^3");
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == '_' || c == '-'))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == '\'' || c == '-').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

fn numbers(words: &[String]) -> Vec<&str> {
    words.iter().filter(|w| w.chars().all(|c| c.is_ascii_digit() || c == '.') && w.chars().any(|c| c.is_ascii_digit())).map(String::as_str).collect()
}

fn negations(words: &[String]) -> usize {
    words.iter().filter(|w| NEGATIONS.contains(&w.as_str()) || w.ends_with("n't")).count()
}

/// Hashes, ids and long words: must be identical.
fn identifiers(words: &[String]) -> Vec<&str> {
    let mut ids: Vec<&str> = words
        .iter()
        .filter(|w| {
            let letters = w.chars().any(|c| c.is_alphabetic());
            let digits = w.chars().any(|c| c.is_ascii_digit());
            w.chars().count() >= 20 || (letters && digits && w.len() >= 6)
        })
        .map(String::as_str)
        .collect();
    ids.sort_unstable();
    ids
}

fn counts(words: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for w in words {
        *m.entry(w.as_str()).or_insert(0) += 1;
    }
    m
}

/// "A to B" pairs, as (A, B).
fn directions(words: &[String]) -> Vec<(&str, &str)> {
    words
        .windows(3)
        .filter(|w| DIRECTIONAL.contains(&w[1].as_str()))
        .map(|w| (w[0].as_str(), w[2].as_str()))
        .collect()
}

/// Why two prompts that embed alike still ask different things; `None` when no rule fires.
pub fn conflict(cached: &str, asked: &str) -> Option<&'static str> {
    let (a, b) = (words(cached), words(asked));
    if numbers(&a) != numbers(&b) {
        return Some("numbers");
    }
    if negations(&a) != negations(&b) {
        return Some("negation");
    }
    let (ca, cb) = (counts(&a), counts(&b));
    let has = |m: &BTreeMap<&str, usize>, w: &str| m.contains_key(w);
    for (x, y) in OPPOSITES {
        let flipped = |p: &BTreeMap<&str, usize>, q: &BTreeMap<&str, usize>| has(p, x) && !has(p, y) && has(q, y) && !has(q, x);
        if flipped(&ca, &cb) || flipped(&cb, &ca) {
            return Some("opposite");
        }
    }
    let db = directions(&b);
    if directions(&a).iter().any(|(x, y)| x != y && db.contains(&(*y, *x)) && !db.contains(&(*x, *y))) {
        return Some("direction");
    }
    if identifiers(&a) != identifiers(&b) {
        return Some("identifier");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traps_conflict() {
        for (a, b, why) in [
            ("What is 17 times 23?", "What is 17 times 24?", "numbers"),
            ("How do I turn on dark mode?", "How do I turn off dark mode?", "opposite"),
            ("When did the Second World War end?", "When did the Second World War begin?", "opposite"),
            ("Convert 100 Fahrenheit to Celsius.", "Convert 100 Celsius to Fahrenheit.", "direction"),
            ("Translate hello from English to French", "Translate hello from French to English", "direction"),
            ("Why is the sky blue?", "Why isn't the sky blue?", "negation"),
            ("Can I eat eggs when pregnant?", "Can I not eat eggs when pregnant?", "negation"),
            ("Explain digest 9f86d081884c7d659a2feaa0c55ad015", "Explain digest 60303ae22b998861bce3b28f33eec1be", "identifier"),
        ] {
            assert_eq!(conflict(a, b), Some(why), "{a} / {b}");
            assert_eq!(conflict(b, a), Some(why), "{b} / {a}");
        }
    }

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            ("What is the integral of x squared?", "what's the integral of x^2?"),
            ("How do I reverse a list in Python?", "In Python, how can I reverse a list?"),
            ("Who was the first emperor of Rome?", "Who was Rome's first emperor?"),
            ("What is 2 + 2?", "what is 2+2"),
            ("How do I turn on dark mode on my phone?", "How can I turn on my phone's dark mode?"),
            ("Convert 100 Fahrenheit to Celsius", "How much is 100 Fahrenheit in Celsius?"),
        ] {
            assert_eq!(conflict(a, b), None, "{a} / {b}");
        }
    }
}
