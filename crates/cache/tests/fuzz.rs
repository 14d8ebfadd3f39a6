//! Fuzzing the near-duplicate guard (`vane_cache::guard::conflict`) over prompts made of the
//! words and characters its rules read: numbers, negations, opposites, directions, names,
//! question words, CJK numerals, particles, negations and opposites, emoji: one target (a
//! `proptest!` block) of `VANE_FUZZ_CASES` inputs, split between its properties (see
//! `vane-fuzz`). Found cases are kept at the end as named tests, and proptest replays the seeds in `proptest-regressions/fuzz.txt` first.

use proptest::prelude::*;
use proptest::sample::select;
use vane_cache::guard::conflict;
use vane_fuzz::{config, peak_bytes, soup};

/// What the guard's rules read, and what sits between.
const TOKENS: &[&str] = &[
    // English: numbers, negations, opposites, directions, coordinators, question words, names.
    "what", "is", "the", "how", "do", "I", "a", "of", "in", "17", "23", "2.10.0", "20,000", "1,5", "three", "twelve", "25th", "no", "not", "never",
    "without", "n't", "don't", "non-", "or not", "why or why not", "on", "off", "begin", "end", "pros", "cons", "men", "women", "to", "from", "than",
    "and", "or", "vs", "who", "when", "where", "why", "Paris", "London", "Python", "Java", "Node.js", "Rome's", "Croats", "Turks", "squared",
    "9f86d081884c7d659a2f", "x^2", "\u{2019}", ". ", "? ", "!", "\n",
    // CJK: numerals, units, particles, negations, A-not-A, opposites, question words, synonyms.
    "一", "二", "两", "三", "十", "百", "千", "万", "亿", "〇", "零", "十五", "的", "了", "吗", "是", "请问", "不", "没", "非常", "别人", "未来", "能不能",
    "有没有", "开", "关", "买", "卖", "涨", "跌", "谁", "什么时候", "哪里", "为什么", "为啥", "怎么", "如何", "多少", "一个", "统一", "秦朝", "唐朝",
    "北京", "上海", "感冒", "失眠", "中", "里", "ない", "の", "は", "않", "은", "？", "。",
    // Emoji.
    "🐱", "🐶", "☀",
];

fn prompt() -> impl Strategy<Value = String> {
    soup(TOKENS.to_vec(), 24)
}

/// Most heap one comparison may hold per byte of the two prompts, plus a constant.
const BYTES_PER_BYTE: usize = 200;
const SLACK: usize = 64 << 10;

proptest! {
    #![proptest_config(config(2))]

    /// The guard, any two prompts: never a panic, heap linear in the prompts; a prompt never
    /// conflicts with itself; and whether two prompts conflict does not depend on which of
    /// them is the cached one.
    #[test]
    fn fuzz_guard(a in prompt(), b in prompt()) {
        let (ab, peak) = peak_bytes(|| conflict(&a, &b));
        prop_assert!(peak <= BYTES_PER_BYTE * (a.len() + b.len()) + SLACK, "{peak} bytes for {} + {}", a.len(), b.len());
        prop_assert_eq!(conflict(&a, &a), None, "{:?} against itself", a);
        prop_assert_eq!(ab.is_some(), conflict(&b, &a).is_some(), "{:?} / {:?}: {:?} one way, {:?} the other", a, b, ab, conflict(&b, &a));
    }

    /// The guard, a prompt and the same prompt with a detail added (words that carry none of
    /// the rules' meaning): never a conflict by the number or question rules, which compare
    /// only what both sides say.
    #[test]
    fn fuzz_guard_added_detail(a in prompt(), extra in proptest::collection::vec(select(vec!["please", "thanks", "quickly", "explain", "briefly"]), 1..4)) {
        let b = format!("{a} {}", extra.join(" "));
        let why = conflict(&a, &b);
        prop_assert!(!matches!(why, Some("numbers" | "question")), "{:?} / {:?}: {:?}", a, b, why);
    }
}

// --- cases found by fuzzing, kept as regressions ---
