//! The near-duplicate guard: embeddings score "how do I turn on X" and "how do I turn off X" as
//! the same question, so a semantic match must also survive a few exact checks on the words.
//!
//! A cached prompt and a new one conflict when
//! - both mention numbers, and not the same ones (17 × 23 is not 17 × 24; "three" counts as 3);
//!   a number on one side only is a detail added, not a different question,
//! - one is negated and the other is not ("not", "never", "without", "n't", "non-...": whether any
//!   appears, not how often, so "No, X doesn't exist" still matches "X is not there"),
//! - a word is swapped for its opposite (on/off, begin/end, pros/cons, men/women, ...),
//! - the direction is reversed ("Fahrenheit to Celsius" against "Celsius to Fahrenheit"; in
//!   Chinese, what stands before 转换成, 到, 比, ... on one side stands after it on the other),
//! - identifier-like tokens differ (hashes, ids, long words: the encoder maps words over 100
//!   characters to one unknown token, so it cannot tell them apart at all),
//! - each names something the other never mentions (a capitalised word inside a sentence: Paris
//!   against London, Python against Java); a name on one side only is a detail, not a swap,
//! - two names trade places and nothing else changes ("What do Croats think of Turks?" against
//!   "What do Turks think of Croats?"), unless only "and"/"or"/"vs" stands between them,
//! - they ask different things of the same subject: one asks who, when, where or why, the other
//!   asks one of these too, but never the same ("Who invented X?" against "When was X invented?"),
//! - each has Chinese, Japanese or Korean characters the other lacks, outside the particles and
//!   numerals (秦朝 against 唐朝, 感冒 against 失眠): CJK text has no capitals to find names by
//!   and no spaces to find words by, so its characters are compared one by one; characters on
//!   one side only are a detail added, as with names,
//! - likewise for emoji (🐱 against 🐶).
//!
//! CJK numerals (三, 十五, 两百) count as numbers and 不/没/别/非/未/无 (ない, 않) as negation.

use std::collections::BTreeSet;

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
    ("pros", "cons"), ("advantage", "disadvantage"), ("advantages", "disadvantages"), ("good", "bad"), ("better", "worse"),
    ("like", "dislike"), ("love", "hate"), ("like", "hate"), ("men", "women"), ("man", "woman"),
    ("boy", "girl"), ("boys", "girls"), ("male", "female"), ("legal", "illegal"), ("possible", "impossible"),
    ("agree", "disagree"), ("cheap", "expensive"), ("fast", "slow"), ("easy", "hard"), ("early", "late"),
    ("dark", "light"), ("rich", "poor"), ("strong", "weak"), ("safe", "unsafe"), ("healthy", "unhealthy"),
    ("long", "short"), ("big", "small"), ("old", "new"), ("young", "old"), ("ascending", "descending"),
    ("uppercase", "lowercase"), ("input", "output"), ("send", "receive"), ("client", "server"), ("read", "write"),
    ("include", "exclude"), ("accept", "reject"), ("pass", "fail"), ("profit", "loss"), ("parent", "child"),
    ("prefix", "suffix"), ("top", "bottom"), ("internal", "external"), ("public", "private"), ("sync", "async"),
    ("past", "future"),
];

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot", "unable", "non",
    // Contractions typed without the apostrophe.
    "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt", "shouldnt", "couldnt",
    "havent", "hasnt",
];

/// Words joining a "from → to" pair: their order is the question.
const DIRECTIONAL: &[&str] = &["to", "into", "from", "vs", "versus", "than"];

/// Words that make two names interchangeable: "Judo and Aikido" is "Aikido and Judo".
const COORDINATORS: &[&str] = &["and", "or", "vs", "versus", "&", "nor"];

/// Question words that each ask for a different kind of answer (a person, a time, a place, a cause).
const ASKS: &[&str] = &["who", "when", "where", "why"];

/// Spelled-out numbers, compared as digits.
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"), ("six", "6"), ("seven", "7"),
    ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"), ("twelve", "12"), ("twenty", "20"), ("thirty", "30"),
    ("fifty", "50"), ("hundred", "100"), ("thousand", "1000"), ("million", "1000000"),
];

/// Function words: never a name, even capitalised ("What", "The").
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "was", "were", "be", "been", "do", "does",
    "did", "i", "you", "he", "she", "it", "we", "they", "me", "my", "your", "our", "their", "his", "her", "its", "this",
    "that", "these", "those", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "can", "could",
    "should", "would", "will", "shall", "may", "might", "must", "have", "has", "had", "there", "here", "with", "at", "by",
    "from", "as", "about", "into", "than", "then", "so", "if", "but", "not", "no", "any", "some", "all", "more", "most",
    "very", "just", "also", "too",
];

fn normalise(text: &str) -> String {
    // "x squared" and "x^2" are the same number; a typographic apostrophe is an apostrophe.
    text.to_lowercase().replace(" squared", "^2").replace(" cubed", "^3").replace('\u{2019}', "'")
}

/// Han characters, kana and hangul: scripts written without spaces between words.
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xFF66..=0xFF9F
        | 0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF | 0x20000..=0x2FFFF)
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F000..=0x1FAFF | 0x2600..=0x27BF)
}

/// CJK numerals: digits, then the units that multiply them.
const CJK_DIGITS: &[(char, u64)] = &[('零', 0), ('〇', 0), ('一', 1), ('二', 2), ('两', 2), ('三', 3), ('四', 4), ('五', 5), ('六', 6), ('七', 7), ('八', 8), ('九', 9)];
const CJK_UNITS: &[(char, u64)] = &[('十', 10), ('百', 100), ('千', 1000), ('万', 10_000), ('亿', 100_000_000)];

fn is_cjk_numeral(c: char) -> bool {
    CJK_DIGITS.iter().chain(CJK_UNITS).any(|&(d, _)| d == c)
}

/// Particles and function characters of Chinese, Japanese and Korean: paraphrases add and drop
/// them freely ("秦朝是哪一年建立的" / "秦朝哪年建立"), so they never make two questions differ.
const CJK_PARTICLES: &str = "的地得了着过吗呢吧啊呀嘛么是在请问和与及也就还又而且把被给将个之于\
    のはがをにでともかねよへやなだすましたてです\
    은는이가을를에의도와과로요";

/// Negation in CJK text: whether any of these appears ("非常", "very", is no negation).
const CJK_NEGATIONS: &[&str] = &["不", "没", "別", "别", "非", "未", "无", "無", "ない", "ません", "않", "못", "없"];

/// The value of a run of CJK numerals: 十五 is 15, 两百三十 is 230, 二〇二四 (digit by digit) 2024.
fn cjk_number(run: &[char]) -> String {
    let digit = |c: char| CJK_DIGITS.iter().find(|&&(d, _)| d == c).map(|&(_, v)| v);
    let unit = |c: char| CJK_UNITS.iter().find(|&&(u, _)| u == c).map(|&(_, v)| v);
    if run.iter().all(|&c| digit(c).is_some()) {
        return run.iter().filter_map(|&c| digit(c)).map(|d| d.to_string()).collect();
    }
    let (mut total, mut section, mut number) = (0u64, 0u64, 0u64);
    for &c in run {
        if let Some(d) = digit(c) {
            number = d;
        } else if let Some(u) = unit(c) {
            if u >= 10_000 {
                total = total.saturating_add((section + number).max(1).saturating_mul(u));
                section = 0;
            } else {
                // 十五: a unit without a digit before it counts once.
                section = section.saturating_add(if number == 0 { 1 } else { number }.saturating_mul(u));
            }
            number = 0;
        }
    }
    total.saturating_add(section).saturating_add(number).to_string()
}

/// Spellings of one question word or request in Chinese, each with the one it is compared as;
/// longest first, so that 为什么 is read before 什么. The empty ones are politeness.
const CJK_SYNONYMS: &[(&str, &str)] = &[
    ("麻烦问一下", ""), ("我想知道", ""), ("想问一下", ""), ("请告诉我", ""), ("能否告诉我", ""), ("告诉我", ""), ("问一下", ""),
    ("请问", ""), ("麻烦", ""), ("一下", ""),
    ("怎么样才能", "怎么"), ("怎么样", "怎么"), ("怎样才能", "怎么"), ("怎么才能", "怎么"), ("如何才能", "怎么"), ("要怎么", "怎么"),
    ("该怎么", "怎么"), ("如何", "怎么"), ("怎样", "怎么"), ("咋样", "怎么"), ("咋", "怎么"),
    ("为什么", "为何"), ("为啥", "为何"), ("怎么会", "为何"),
    ("什么时候", "何时"), ("几时", "何时"), ("啥时候", "何时"),
    ("哪儿", "哪里"), ("何处", "哪里"),
    ("什么", "啥"), ("哪位", "谁"),
    ("能够", "能"), ("可不可以", "能"), ("可以", "能"),
    // 一 that counts nothing: "a", "usually", "together", "unify", ...
    ("一个", "个"), ("一种", "种"), ("一些", "些"), ("一点", "点"), ("一般", "通常"), ("一直", "始终"), ("一起", "共同"),
    ("一样", "同样"), ("统一", "统合"), ("唯一", "唯独"), ("一定", "必定"),
];

/// Characters whose swap flips the meaning of a Chinese question (开灯/关灯, 买/卖, 涨/跌).
const CJK_OPPOSITES: &[(char, char)] = &[
    ('开', '关'), ('大', '小'), ('多', '少'), ('上', '下'), ('左', '右'), ('前', '后'), ('买', '卖'), ('增', '减'), ('加', '减'),
    ('高', '低'), ('长', '短'), ('快', '慢'), ('冷', '热'), ('早', '晚'), ('新', '旧'), ('男', '女'), ('东', '西'), ('南', '北'),
    ('进', '出'), ('来', '去'), ('正', '负'), ('升', '降'), ('涨', '跌'), ('胖', '瘦'), ('好', '坏'), ('难', '易'), ('真', '假'),
    ('对', '错'), ('输', '赢'), ('存', '取'), ('强', '弱'), ('内', '外'), ('生', '死'), ('优', '缺'), ('利', '弊'), ('装', '卸'),
    ('加', '解'), ('宽', '窄'), ('深', '浅'), ('厚', '薄'), ('胜', '败'), ('收', '支'), ('借', '还'), ('最', '次'), ('首', '末'),
    ('始', '终'), ('古', '今'), ('老', '少'), ('父', '母'), ('夏', '冬'), ('春', '秋'), ('日', '夜'), ('昼', '夜'), ('阴', '阳'),
];

/// How many characters each side must have that the other lacks for two Chinese questions to
/// be about different things (fewer: see [`one_swapped`]).
const CJK_MIN_SWAPPED: usize = 2;

/// What each Chinese question word asks for (after [`cjk_canonical`]): two questions asking for
/// different ones ask different things.
const CJK_ASKS: &[(&str, &str)] = &[("谁", "who"), ("何时", "when"), ("哪年", "when"), ("哪一年", "when"), ("哪里", "where"), ("为何", "why"), ("多少", "how_much")];

/// Chinese with its question words and requests spelled one way, and its A-not-A questions
/// (能不能, 有没有, 是不是: "can it or can it not", no negation) asked as plain ones.
fn cjk_canonical(text: &str) -> String {
    let mut out = text.to_string();
    for (from, to) in CJK_SYNONYMS {
        out = out.replace(from, to);
    }
    let chars: Vec<char> = out.chars().collect();
    let mut kept = String::with_capacity(out.len());
    let mut i = 0;
    while i < chars.len() {
        // X不X / X没X: the question, once.
        if i + 2 < chars.len() && is_cjk(chars[i]) && matches!(chars[i + 1], '不' | '没') && chars[i + 2] == chars[i] {
            kept.push(chars[i]);
            i += 3;
            continue;
        }
        kept.push(chars[i]);
        i += 1;
    }
    // A closing 不 or 没 asks a question ("要签证不？" is "要签证吗？"): it negates nothing.
    let body = kept.trim_end_matches(|c: char| !is_cjk(c) && !c.is_alphanumeric()).len();
    if body > 3 && (kept[..body].ends_with('不') || kept[..body].ends_with('没')) {
        kept.replace_range(body - 3..body, "吗");
    }
    kept
}

/// Two texts that are the same but for one CJK character in the same place, not a synonym.
fn one_swapped(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() != b.len() {
        return false;
    }
    let mut diffs = a.iter().zip(&b).filter(|(x, y)| x != y);
    match (diffs.next(), diffs.next()) {
        (Some((&x, &y)), None) => is_cjk(x) && is_cjk(y) && !CJK_SAME.iter().any(|&(p, q)| (p, q) == (x, y) || (q, p) == (x, y)),
        _ => false,
    }
}

/// Characters that stand for each other in a question: "in", "make", "take", "raise", ...
const CJK_SAME: &[(char, char)] = &[('中', '里'), ('里', '内'), ('使', '让'), ('将', '把'), ('该', '应'), ('高', '升'), ('除', '掉'), ('算', '求'), ('和', '跟'), ('和', '同')];

/// Words that put a question's two things in an order: from one to the other (转换成, 换算成, 到)
/// or one against the other (比). Longest first: 转换成 before 转.
const CJK_DIRECTIONS: &[&str] = &["转换成", "转换为", "转化成", "转化为", "换算成", "换算为", "兑换成", "兑换为", "翻译成", "翻译为", "迁移到", "转成", "转为", "转到", "传到", "换成", "变成", "改成", "转", "到", "比"];

/// The same words on both sides of the same direction word, but what came before it on one side
/// comes after it on the other (摄氏度转换成华氏度 / 华氏度转换成摄氏度, 热水比冷水 / 冷水比热水).
fn cjk_direction_swapped(a: &str, b: &str) -> bool {
    // Meaningful units: CJK characters other than particles, and Latin words (iPhone, int).
    fn units(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut word = String::new();
        for c in text.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() {
                word.push(c.to_ascii_lowercase());
                continue;
            }
            if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
            if is_cjk(c) && !CJK_PARTICLES.contains(c) {
                out.insert(c.to_string());
            }
        }
        out
    }
    let Some((at_a, at_b, marker)) = CJK_DIRECTIONS.iter().find_map(|m| Some((a.find(m)?, b.find(m)?, m))) else {
        return false;
    };
    let (a1, a2) = (units(&a[..at_a]), units(&a[at_a + marker.len()..]));
    let (b1, b2) = (units(&b[..at_b]), units(&b[at_b + marker.len()..]));
    let moved = |from: &BTreeSet<String>, other: &BTreeSet<String>, to: &BTreeSet<String>| from.difference(other).all(|u| to.contains(u));
    let changed = a1 != b1 || a2 != b2;
    changed && moved(&a1, &b1, &b2) && moved(&b1, &a1, &a2) && moved(&a2, &b2, &b1) && moved(&b2, &a2, &a1)
}

fn cjk_asks(canonical: &str) -> BTreeSet<&'static str> {
    CJK_ASKS.iter().filter(|(w, _)| canonical.contains(w)).map(|&(_, kind)| kind).collect()
}

/// The CJK characters (or emoji) of a text that can carry its meaning: particles and numerals
/// aside (numbers are compared as numbers).
fn glyphs(text: &str, kind: fn(char) -> bool) -> BTreeSet<char> {
    text.chars().filter(|&c| kind(c) && !CJK_PARTICLES.contains(c) && !is_cjk_numeral(c)).collect()
}

/// Words with a negation character that negate nothing: 非常 (very), 别人 (others), 未来
/// (future), 得不行 (extremely), 不同 is kept (it is a difference).
const CJK_NOT_NEGATIONS: &[&str] = &["非常", "别人", "别的", "区别", "特别", "分别", "类别", "级别", "性别", "告别", "离别", "未来", "无线", "无论", "得不行", "得不得了"];

fn cjk_negated(text: &str) -> bool {
    let text = CJK_NOT_NEGATIONS.iter().fold(text.to_string(), |t, w| t.replace(w, ""));
    CJK_NEGATIONS.iter().any(|n| text.contains(n))
}

fn words(text: &str) -> Vec<String> {
    // Each CJK character is a word of its own: the script puts no spaces between words.
    let spaced: String = normalise(text).chars().flat_map(|c| if is_cjk(c) { vec![' ', c, ' '] } else { vec![c] }).collect();
    spaced
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == '_' || c == '-'))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == '\'' || c == '-').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Every number in the text (digit runs, with inner dots: "2.10.0"; "20,000" is 20000), and the
/// spelled-out ones, sorted.
fn numbers(text: &str) -> Vec<String> {
    let text = normalise(text);
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // CJK text has no spaces: "第3章" is the number 3, "iPhone5" an identifier.
        let glued = i > 0 && chars[i - 1].is_alphanumeric() && !is_cjk(chars[i - 1]);
        if chars[i].is_ascii_digit() && !glued {
            let mut n = String::new();
            while i < chars.len() {
                let c = chars[i];
                let inner = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
                if c.is_ascii_digit() || (c == '.' && inner(i + 1)) {
                    n.push(c);
                } else if !(c == ',' && inner(i + 1) && inner(i + 2) && inner(i + 3) && !inner(i + 4)) {
                    break; // a thousands separator is skipped; any other comma ends the number
                }
                i += 1;
            }
            // "25th" is a number; "9f86d0" is an identifier (checked as one).
            let letters: String = chars[i..].iter().take_while(|&&c| c.is_alphanumeric() && !is_cjk(c)).collect();
            if letters.is_empty() || ["st", "nd", "rd", "th"].contains(&letters.as_str()) {
                out.push(n);
            }
        } else if is_cjk_numeral(chars[i]) {
            let start = i;
            while i < chars.len() && is_cjk_numeral(chars[i]) {
                i += 1;
            }
            let run = &chars[start..i];
            // 二〇二四 is a year, read digit by digit; 一六 in 统一六国 ("unify the six") is two.
            if run.len() == 2 && run.iter().all(|c| !CJK_UNITS.iter().any(|&(u, _)| u == *c)) {
                out.extend(run.iter().map(|&c| cjk_number(&[c])));
            } else {
                out.push(cjk_number(run));
            }
        } else if chars[i].is_alphanumeric() && !is_cjk(chars[i]) {
            let start = i;
            while i < chars.len() && chars[i].is_alphanumeric() && !is_cjk(chars[i]) {
                i += 1;
            }
            let w: String = chars[start..i].iter().collect();
            if let Some((_, d)) = NUMBER_WORDS.iter().find(|(name, _)| *name == w) {
                out.push((*d).to_string());
            }
        } else {
            i += 1;
        }
    }
    out.sort_unstable();
    out
}

/// Whether the text says "not" anywhere, except in the alternative "X or not?" / "why or why
/// not?" (which asks both ways) and "no. 1" (a number).
fn negated(words: &[String]) -> bool {
    words.iter().enumerate().any(|(i, w)| {
        let negation = NEGATIONS.contains(&w.as_str()) || w.ends_with("n't") || w.starts_with("non-");
        let before = |k: usize| i.checked_sub(k).map(|j| words[j].as_str());
        let alternative = before(1) == Some("or") || (before(1) == Some("why") && before(2) == Some("or"));
        let number = w == "no" && words.get(i + 1).is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
        negation && !alternative && !number
    })
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

/// "A to B" pairs, as (A, B).
fn directions(words: &[String]) -> Vec<(&str, &str)> {
    words
        .windows(3)
        .filter(|w| DIRECTIONAL.contains(&w[1].as_str()))
        .map(|w| (w[0].as_str(), w[2].as_str()))
        .collect()
}

/// Lowercase, without a possessive or plural "s": "Rome's" and "rome", "Tutorials" and "tutorial".
fn stem(word: &str) -> String {
    let w = word.to_lowercase();
    if w.chars().count() > 3 && w.ends_with('s') && !w.ends_with("ss") { w[..w.len() - 1].to_string() } else { w }
}

/// The alphanumeric runs of the text, stemmed: what a name is looked up in.
fn vocabulary(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(stem).collect()
}

/// Capitalised words that do not start a sentence, stemmed: names, mostly ("Paris", "Python").
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut sentence_start = true;
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            word.push(c);
            if chars.peek().is_some_and(|n| n.is_alphanumeric()) {
                continue;
            }
            let first_upper = word.chars().next().is_some_and(char::is_uppercase);
            if !sentence_start && first_upper && word != "I" && !STOPWORDS.contains(&word.to_lowercase().as_str()) {
                out.insert(stem(&word));
            }
            sentence_start = false;
            word.clear();
        } else if matches!(c, '.' | '?' | '!' | ':' | ';' | '\n') {
            // "Node.js", "2.10": a dot inside a word does not start a sentence.
            sentence_start |= chars.peek().is_none_or(|n| n.is_whitespace());
        }
    }
    out
}

/// Whether the two texts are the same words but for two names that swapped places, with more
/// than a coordinator between them: who does what to whom changed.
fn names_swapped(cached: &str, asked: &str, a: &[String], b: &[String]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a, b): (Vec<String>, Vec<String>) = (a.iter().map(|w| stem(w)).collect(), b.iter().map(|w| stem(w)).collect());
    let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    let &[i, j] = differ.as_slice() else { return false };
    let crossed = a[i] == b[j] && a[j] == b[i];
    let named = |text: &str| {
        let names = names(text);
        names.contains(&a[i]) && names.contains(&a[j])
    };
    let related = a[i + 1..j].iter().any(|w| !COORDINATORS.contains(&w.as_str()));
    crossed && related && named(cached) && named(asked)
}

fn asks(words: &[String]) -> BTreeSet<&str> {
    words.iter().map(String::as_str).filter(|w| ASKS.contains(w)).collect()
}

/// Why two prompts that embed alike still ask different things; `None` when no rule fires.
pub fn conflict(cached: &str, asked: &str) -> Option<&'static str> {
    let (a, b) = (words(cached), words(asked));
    let (ca, cb) = (cjk_canonical(cached), cjk_canonical(asked));
    let (na, nb) = (numbers(&ca), numbers(&cb));
    if !na.is_empty() && !nb.is_empty() && na != nb {
        return Some("numbers");
    }
    if (negated(&a) || cjk_negated(&ca)) != (negated(&b) || cjk_negated(&cb)) {
        return Some("negation");
    }
    let (sa, sb): (BTreeSet<&str>, BTreeSet<&str>) = (a.iter().map(String::as_str).collect(), b.iter().map(String::as_str).collect());
    for (x, y) in OPPOSITES {
        let flipped = |p: &BTreeSet<&str>, q: &BTreeSet<&str>| p.contains(x) && !p.contains(y) && q.contains(y) && !q.contains(x);
        if flipped(&sa, &sb) || flipped(&sb, &sa) {
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
    let (va, vb) = (vocabulary(cached), vocabulary(asked));
    let only_in = |text: &str, other: &BTreeSet<String>| names(text).into_iter().any(|n| !other.contains(&n));
    if only_in(cached, &vb) && only_in(asked, &va) {
        return Some("names");
    }
    if names_swapped(cached, asked, &a, &b) {
        return Some("swap");
    }
    let (qa, qb) = (asks(&a), asks(&b));
    if !qa.is_empty() && !qb.is_empty() && qa.is_disjoint(&qb) {
        return Some("question");
    }
    if cjk_direction_swapped(&ca, &cb) {
        return Some("direction");
    }
    let (qa, qb) = (cjk_asks(&ca), cjk_asks(&cb));
    if !qa.is_empty() && !qb.is_empty() && qa.is_disjoint(&qb) {
        return Some("question");
    }
    let (ga, gb) = (glyphs(&ca, is_cjk), glyphs(&cb, is_cjk));
    let (only_a, only_b): (BTreeSet<char>, BTreeSet<char>) = (ga.difference(&gb).copied().collect(), gb.difference(&ga).copied().collect());
    if CJK_OPPOSITES.iter().any(|&(x, y)| (only_a.contains(&x) && only_b.contains(&y)) || (only_a.contains(&y) && only_b.contains(&x))) {
        return Some("opposite");
    }
    // One character for another is often a synonym (中/里, 快/速) and two or more on each side
    // another subject (北京/上海); but one character swapped in an otherwise identical question
    // is the question about something else (秦朝/唐朝是哪一年建立的).
    if only_a.len().min(only_b.len()) >= CJK_MIN_SWAPPED || one_swapped(&ca, &cb) {
        return Some("cjk");
    }
    let (ea, eb) = (glyphs(cached, is_emoji), glyphs(asked, is_emoji));
    if !ea.is_subset(&eb) && !eb.is_subset(&ea) {
        return Some("emoji");
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
            ("Is version 2.10.0 supported?", "Is version 2.11.0 supported?", "numbers"),
            ("Can I make 20,000 a month betting?", "Can I make 400,000 a month betting?", "numbers"),
            ("What are three habits of productive people?", "What are 4 habits of productive people?", "numbers"),
            ("How to make bread with yeast", "How to make bread without yeast", "negation"),
            ("What are examples of renewable energy?", "What are examples of non-renewable energy?", "negation"),
            ("Why doesn\u{2019}t my car start?", "Why does my car start?", "negation"),
            ("Why dont cats like water?", "Why do cats like water?", "negation"),
            ("Is it safe or is it not safe?", "Is it safe?", "negation"),
            ("What are the pros of nuclear power?", "What are the cons of nuclear power?", "opposite"),
            ("What are the best hairstyles for men?", "What are the best hairstyles for women?", "opposite"),
            ("What is the capital of France?", "What is the capital of Germany?", "names"),
            ("How do I reverse a list in Python?", "How do I reverse a list in Java?", "names"),
            ("What do people in Denver think of Austin?", "What do people in Seattle think of Austin?", "names"),
            ("What do Croats think of Turks?", "What do Turks think of Croats?", "swap"),
            ("What are the most profitable products to import from Canada and sell in India?", "What are the most profitable products to import from India and sell in Canada?", "swap"),
            ("How is Apple better than Samsung?", "How is Samsung better than Apple?", "swap"),
            ("Who invented the telephone?", "When was the telephone invented?", "question"),
            ("Why did carrier pigeons become extinct?", "When did carrier pigeons become extinct?", "question"),
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
            // Whether a negation appears, not how many: both are negated.
            ("No, LOAD_HUB doesn't exist in version 2.10.0.", "LOAD_HUB is not available in version 2.10.0."),
            ("Why can't I sleep at night?", "Why am I unable to sleep at night?"),
            ("Why cant we reduce global warming?", "Why can't we reduce global warming?"),
            // "Or not" asks both ways: no negation.
            ("Is it safe to eat raw eggs? Why or why not?", "Is it safe to eat raw eggs?"),
            ("Are mediums real or not?", "Are mediums real?"),
            // Spelled-out numbers are numbers; a number on one side only is an added detail.
            ("What are three habits of productive people?", "What are 3 habits of productive people?"),
            ("Is Crimea part of Russia now?", "Is Crimea a part of Russia as of 2016?"),
            ("Can I make 20,000 a month betting?", "Can I make 20000 a month betting?"),
            ("What is the 25th anniversary gift?", "What's the gift for a 25th anniversary?"),
            // A name on one side only is a detail, a name in other case or with "'s" the same one,
            // and a capitalised sentence start or "Node.js" no name at all.
            ("How do I enable JavaScript in Chrome?", "How to turn on javascript in Google Chrome?"),
            ("Who was the first emperor of Rome?", "Who was Rome\u{2019}s first emperor?"),
            ("How do I install Node.js on Windows?", "How can I install Node.js on Windows? Tell me."),
            // Names trading places around "and"/"or" ask the same; a reordered sentence is no swap.
            ("What are the differences between Aikido and Judo?", "What are the differences between Judo and Aikido?"),
            ("Which is better, Java or Python?", "Which is better, Python or Java?"),
            ("Why Delhi is a union territory?", "Why is Delhi a union territory?"),
            // One question word asked, the other side phrasing it without one.
            ("Why did the Roman Empire fall?", "What caused the fall of the Roman Empire?"),
            ("Who wrote Hamlet and when?", "When was Hamlet written and who wrote it?"),
        ] {
            assert_eq!(conflict(a, b), None, "{a} / {b}");
            assert_eq!(conflict(b, a), None, "{b} / {a}");
        }
    }

    #[test]
    fn cjk_traps_conflict() {
        for (a, b, why) in [
            ("秦朝是哪一年建立的？", "唐朝是哪一年建立的？", "cjk"),
            ("我应该如何治疗感冒？", "我应该如何治疗失眠？", "cjk"),
            ("猫为什么喜欢睡觉？", "狗为什么喜欢啃骨头？", "cjk"),
            ("北京是哪个国家的首都？", "东京是哪个国家的首都？", "cjk"),
            ("日本の首都はどこですか？", "中国の首都はどこですか？", "cjk"),
            ("北京的人口是多少？", "上海的人口是多少？", "cjk"),
            ("怎么开灯？", "怎么关灯？", "opposite"),
            ("股票涨了怎么办", "股票跌了怎么办", "opposite"),
            ("秦始皇是谁？", "秦始皇是什么时候出生的？", "question"),
            ("能不能喝咖啡", "不能喝咖啡", "negation"),
            ("三加五等于几？", "三加六等于几？", "numbers"),
            ("一年有十二个月吗", "一年有十五个月吗", "numbers"),
            ("什么是3的平方", "什么是四的平方", "numbers"),
            ("猫喜欢吃鱼", "猫不喜欢吃鱼", "negation"),
            ("摄氏度怎么转换成华氏度？", "华氏度怎么转换成摄氏度？", "direction"),
            ("十六进制怎么转十进制？", "十进制怎么转十六进制？", "direction"),
            ("Java中int怎么转String？", "Java中String怎么转int？", "direction"),
            ("怎么把iPhone的照片传到电脑？", "怎么把电脑的照片传到iPhone？", "direction"),
            ("为什么热水比冷水结冰快？", "为什么冷水比热水结冰快？", "direction"),
            ("北京到上海的航班有哪些？", "上海到北京的航班有哪些？", "direction"),
            ("我有钱", "我没有钱", "negation"),
            ("Explain 🐱 to me", "Explain 🐶 to me", "emoji"),
        ] {
            assert_eq!(conflict(a, b), Some(why), "{a} / {b}");
            assert_eq!(conflict(b, a), Some(why), "{b} / {a}");
        }
    }

    #[test]
    fn cjk_paraphrases_pass() {
        for (a, b) in [
            // Particles come and go; characters on one side only are a detail added.
            ("秦朝是哪一年建立的？", "秦朝哪年建立？"),
            ("北京是中国的首都吗？", "北京是中国首都吗？"),
            ("三个苹果多少钱", "3个苹果多少钱"),
            ("这个非常好吃吗", "这个好吃吗"),
            ("What is 秦朝?", "What is 秦朝? Explain."),
            // The ways of asking, politeness, A-not-A questions and 一 that counts nothing.
            ("如何提高英语口语？", "怎么提高英语口语？"),
            ("为什么天空是蓝色的？", "为啥天空是蓝色的？"),
            ("请问怎么求三角形的面积？", "怎么求三角形的面积？"),
            ("能不能喝咖啡？", "能喝咖啡吗？"),
            ("去日本要签证不？", "去日本要签证吗？"),
            ("手机号怎么过户给别人？", "手机号怎么过户？"),
            ("秦始皇统一六国是在哪一年？", "哪一年秦始皇统一了六国？"),
            ("如何在Git中撤销提交？", "怎么在Git里撤销提交？"),
            // A direction word with the same things in the same order, or words only added.
            ("怎么把Word转成PDF？", "如何把Word文档转成PDF？"),
            ("从北京到上海坐高铁要多久？", "北京到上海的高铁要多久？"),
        ] {
            assert_eq!(conflict(a, b), None, "{a} / {b}");
            assert_eq!(conflict(b, a), None, "{b} / {a}");
        }
    }

    #[test]
    fn one_character_for_another_is_left_to_the_encoder_unless_nothing_else_changed() {
        // Kana and hangul particles, or another word order, leave one character on each side:
        // the guard cannot tell a synonym from another subject there; the threshold must.
        for (a, b) in [("東京タワーの高さはどれくらいですか？", "京都タワーの高さはどれくらいですか？"), ("서울은 어느 나라의 수도입니까?", "도쿄는 어느 나라의 수도입니까?")] {
            assert_eq!(conflict(a, b), None, "{a} / {b}");
        }
        assert_eq!(conflict("猫为什么喜欢睡觉", "狗为什么喜欢睡觉"), Some("cjk"), "the same question of another subject");
        assert_eq!(conflict("怎么提高英语口语", "怎么提升英语口语"), None, "高/升: a synonym");
    }

    #[test]
    fn cjk_numerals_read_as_numbers() {
        assert_eq!(numbers("十五"), vec!["15"]);
        assert_eq!(numbers("两百三十个"), vec!["230"]);
        assert_eq!(numbers("二〇二四年"), vec!["2024"]);
        assert_eq!(numbers("三万五千"), vec!["35000"]);
        assert_eq!(numbers("第3章和第三章"), vec!["3", "3"]);
        assert_eq!(numbers("abc三"), vec!["3"], "a CJK numeral after latin letters is still read");
    }

    #[test]
    fn numbers_read_digits_separators_and_words() {
        assert_eq!(numbers("Version 2.10.0, 20,000 rows, 1,5 and twelve; the 3rd."), vec!["1", "12", "2.10.0", "20000", "3", "5"]);
        assert_eq!(numbers("x squared"), vec!["2"]);
        assert!(numbers("digest 9f86d0 of iPhone5, no numbers").is_empty(), "digits inside a word are an identifier");
    }

    #[test]
    fn names_skip_sentence_starts_and_function_words() {
        let n = names("What is Node.js? The runtime by Ryan Dahl. I like it. Is it on Windows's list?");
        assert_eq!(n.into_iter().collect::<Vec<_>>(), vec!["dahl", "node", "ryan", "window"]);
    }
}
