//! What the fuzz tests share: the `tests/fuzz.rs` of `vane-filter`, `vane-proto`, `vane-cache`
//! and `vane-sidecar` are proptest properties over the code that reads untrusted input (the
//! chat request, the sidecar's decision, SSE, the guard's prompts, tenant headers,
//! configuration). Proptest rather than `cargo fuzz`: it runs on the stable toolchain, inside
//! `cargo test`, and shrinks what it finds to a small input.
//!
//! - [`config`]: how many inputs each target gets (`VANE_FUZZ_CASES`, default
//!   [`DEFAULT_CASES`]; `make fuzz-ci` runs 100 000, `make fuzz` 1 000 000), split between the
//!   target's properties; an optional fixed seed (`VANE_FUZZ_SEED`) to replay a run; where
//!   failures are persisted (`proptest-regressions/fuzz.txt` in the crate, replayed first on
//!   every later run).
//! - [`peak_bytes`]: the most heap one call held, counted per thread by this crate's global
//!   allocator, so a property can say that no input makes the code allocate without bound.
//! - Generators: [`soup`] (text made of the tokens a parser cares about and arbitrary
//!   characters), [`json`] (arbitrary JSON values), [`mutate`] (valid inputs broken by a few
//!   byte edits), and in [`openai`] valid chat requests, completions and streams.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use serde_json::Value;

pub use proptest;

pub mod openai;

/// Inputs per fuzz target when `VANE_FUZZ_CASES` is unset: a smoke run that keeps a plain
/// `cargo test` quick. The bounded CI run (`make fuzz-ci`, 100 000) and `make fuzz`
/// (1 000 000) set more.
pub const DEFAULT_CASES: u32 = 1_000;

/// Inputs per fuzz target: `VANE_FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("VANE_FUZZ_CASES").ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// The proptest configuration of a fuzz target made of `properties` properties (one
/// `proptest!` block each): [`cases`] inputs for the target, split evenly between them; a
/// random seed unless `VANE_FUZZ_SEED` fixes one; failures kept in
/// `proptest-regressions/fuzz.txt` (relative to the crate: cargo runs tests there); shrinking
/// bounded to a minute.
pub fn config(properties: u32) -> Config {
    let rng_seed = std::env::var("VANE_FUZZ_SEED").ok().and_then(|s| s.trim().parse().ok()).map_or(RngSeed::Random, RngSeed::Fixed);
    let cases = cases().div_ceil(properties.max(1));
    Config {
        cases,
        // Generators that keep only what the code accepts (`prop_filter_map`, e.g. a filter
        // configuration) reject a share of their draws: allow as many rejects as cases, or a
        // 10⁶ run stops at proptest's fixed 65,536 (a quarter of the tenant target's draws).
        max_local_rejects: cases.max(1 << 16),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/fuzz.txt"))),
        max_shrink_time: 60_000,
        max_global_rejects: 1 << 20,
        rng_seed,
        ..Config::default()
    }
}

// --- allocation meter ---

/// The system allocator, counting the bytes each thread holds (tests run one per thread).
struct Meter;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (memory freed by another thread makes it
    /// drift, which only widens a measure; none of the code measured hands memory across).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: the allocator runs while a thread's locals are being torn down, too.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn size(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are thread-local `Cell`s
// with const initialisers, which neither allocate nor register destructors.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(size(layout));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(size(layout));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        count(-size(layout));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The new block first: while it is copied, both are held.
            count(i64::try_from(new_size).unwrap_or(i64::MAX));
            count(-size(layout));
        }
        p
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns what it returned with the most heap bytes this thread held above what
/// it held before the call, its result included.
///
/// ```
/// let (v, peak) = vane_fuzz::peak_bytes(|| vec![0u8; 1 << 20]);
/// assert_eq!(v.len(), 1 << 20);
/// assert!(peak >= 1 << 20);
/// ```
pub fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get) - start;
    (out, usize::try_from(peak).unwrap_or(0))
}

// --- generators ---

/// Characters parsers trip on: quotes, escapes, separators, control characters, CR/LF, NUL,
/// DEL, a lone surrogate's replacement, non-ASCII letters, CJK, emoji, and anything at all.
pub fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('A', 'Z'),
        2 => proptest::char::range('0', '9'),
        4 => select(vec![
            ' ', ' ', '\n', '\r', '\t', '"', '\\', '{', '}', '[', ']', ':', ',', '.', '?', '!', '\'', '-', '_', '%', '/', ';', '=', '&', '+', '^',
            '\0', '\u{7f}', '\u{1b}', '\u{2019}', '\u{fffd}', '\u{feff}', '\u{200b}', 'é', 'İ', 'ß', 'Ω',
        ]),
        1 => proptest::char::range('\u{4e00}', '\u{9fff}'),
        1 => proptest::char::range('\u{1f300}', '\u{1f6ff}'),
        1 => any::<char>(),
    ]
}

/// Text made of `tokens` (the words a parser gives meaning to) and [`any_char`]s, up to
/// `max` pieces long.
pub fn soup(tokens: Vec<&'static str>, max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => select(tokens).prop_map(str::to_owned),
        2 => Just(" ".to_owned()),
        2 => any_char().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..=max).prop_map(|pieces| pieces.concat())
}

/// Arbitrary JSON values: scalars of every kind (big, negative and fractional numbers, strings
/// from [`soup`] over `keys`), arrays and objects (keys from `keys` or arbitrary), nested a few
/// levels deep.
pub fn json(keys: Vec<&'static str>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        select(vec![0.0, -0.0, 1e300, -1e-300, f64::MAX]).prop_map(Value::from),
        soup(keys.clone(), 6).prop_map(Value::String),
    ];
    let key = prop_oneof![3 => select(keys.clone()).prop_map(str::to_owned), 1 => soup(keys, 6)];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One edit of [`mutate`].
#[derive(Debug, Clone)]
enum Edit {
    /// Flip some bits of one byte.
    Flip(Index, u8),
    /// Insert a byte, or one of the tokens that break parsers.
    Insert(Index, Vec<u8>),
    /// Remove up to this many bytes.
    Delete(Index, usize),
    /// Copy a stretch of the input to another place (repeats, nesting).
    Duplicate(Index, Index, usize),
    /// Cut the input short.
    Truncate(Index),
}

const TOKENS: &[&str] = &[
    "\"", "\\", "{", "}", "[", "]", ",", ":", "null", "true", "-1", "0", "1e999", "-0.0", "18446744073709551616", "\\u0000", "\\ud800",
    "\\n", "\r\n", "\n\n", "\u{0}", "\u{ff}", "\u{10ffff}", "data: ", "[DONE]", "event: error\n", "&", "*a", "&a ", "- ", ": ", "#", "'", "~",
];

fn edit() -> impl Strategy<Value = Edit> {
    let insert = prop_oneof![any::<u8>().prop_map(|b| vec![b]), select(TOKENS).prop_map(|t| t.as_bytes().to_vec())];
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
        4 => (any::<Index>(), insert).prop_map(|(i, b)| Edit::Insert(i, b)),
        3 => (any::<Index>(), 1..16usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1..64usize).prop_map(|(i, j, n)| Edit::Duplicate(i, j, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: Vec<Edit>) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len + 1) };
        match e {
            Edit::Flip(i, mask) if len > 0 => {
                let i = i.index(len);
                bytes[i] ^= mask;
            }
            Edit::Insert(i, b) => {
                let i = at(&i);
                bytes.splice(i..i, b);
            }
            Edit::Delete(i, n) if len > 0 => {
                let i = i.index(len);
                bytes.drain(i..(i + n).min(len));
            }
            Edit::Duplicate(from, to, n) if len > 0 => {
                let from = from.index(len);
                let piece = bytes[from..(from + n).min(len)].to_vec();
                let to = at(&to);
                bytes.splice(to..to, piece);
            }
            Edit::Truncate(i) => bytes.truncate(at(&i)),
            _ => {}
        }
    }
    bytes
}

/// `valid` broken by one to eight edits: bit flips, inserted bytes and parser-breaking tokens,
/// deletions, duplicated stretches, truncation.
pub fn mutate(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, proptest::collection::vec(edit(), 1..8)).prop_map(|(bytes, edits)| apply(bytes, edits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn the_meter_sees_what_a_call_holds() {
        let (_, small) = peak_bytes(|| vec![1u8; 10]);
        let (_, big) = peak_bytes(|| {
            let v = vec![1u8; 1 << 20];
            v.len()
        });
        assert!(small < 1 << 10, "{small}");
        assert!(big >= 1 << 20, "freed before the end, still the peak: {big}");
    }

    #[test]
    fn edits_stay_in_bounds() {
        let mut runner = proptest::test_runner::TestRunner::default();
        for _ in 0..2000 {
            let bytes = mutate(proptest::collection::vec(any::<u8>(), 0..8)).new_tree(&mut runner).unwrap().current();
            assert!(bytes.len() < 8 + 8 * 64);
        }
    }
}
