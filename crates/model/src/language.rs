//! The language of a text, as far as its script and its function words tell: one pass over the
//! characters, no model. An encoder reads some languages (`model.languages`); an embedding of a
//! text in another is no evidence of what it asks, so the semantic cache never matches on it.
//!
//! Scripts name most languages outright (Han: Chinese, kana: Japanese, hangul: Korean, ...).
//! Latin-script text is told apart by its most frequent function words ("the", "le", "der",
//! ...); one with none of them ("integral of x^2"? no: "of" is one) is undetermined, `und`.

use std::fmt;

use serde::Deserialize;

/// A detected language, by its ISO 639-1 code (a script's main language where only the script
/// is known: Cyrillic is `ru`, Arabic script `ar`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Language {
    En,
    Fr,
    De,
    Es,
    Pt,
    It,
    Nl,
    Zh,
    Ja,
    Ko,
    Ru,
    Ar,
    He,
    El,
    Hi,
    Th,
    /// Letters of another script.
    Other,
    /// Latin-script text with no function word of a known language (or no letters at all).
    #[default]
    Und,
}

const ALL: &[Language] = &[
    Language::En, Language::Fr, Language::De, Language::Es, Language::Pt, Language::It, Language::Nl, Language::Zh,
    Language::Ja, Language::Ko, Language::Ru, Language::Ar, Language::He, Language::El, Language::Hi, Language::Th,
    Language::Other, Language::Und,
];

impl Language {
    /// The code in configs, metrics, spans and `/v1/classify`.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fr => "fr",
            Language::De => "de",
            Language::Es => "es",
            Language::Pt => "pt",
            Language::It => "it",
            Language::Nl => "nl",
            Language::Zh => "zh",
            Language::Ja => "ja",
            Language::Ko => "ko",
            Language::Ru => "ru",
            Language::Ar => "ar",
            Language::He => "he",
            Language::El => "el",
            Language::Hi => "hi",
            Language::Th => "th",
            Language::Other => "other",
            Language::Und => "und",
        }
    }

    pub fn from_code(code: &str) -> Option<Language> {
        ALL.iter().copied().find(|l| l.code() == code)
    }

    /// Every language [`detect`] can return, for configs that name one.
    pub fn all() -> &'static [Language] {
        ALL
    }

    /// The scripts a text in this language is written in.
    fn scripts(self) -> u16 {
        match self {
            Language::En | Language::Fr | Language::De | Language::Es | Language::Pt | Language::It | Language::Nl | Language::Und => LATIN,
            Language::Zh => HAN,
            Language::Ja => HAN | KANA,
            Language::Ko => HANGUL | HAN,
            Language::Ru => CYRILLIC,
            Language::Ar => ARABIC,
            Language::He => HEBREW,
            Language::El => GREEK,
            Language::Hi => DEVANAGARI,
            Language::Th => THAI,
            Language::Other => OTHER,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn parse(code: &str) -> Result<Language, String> {
    Language::from_code(code).ok_or_else(|| {
        let codes: Vec<_> = ALL.iter().map(|l| l.code()).collect();
        format!("unknown language '{code}' (one of {})", codes.join(", "))
    })
}

// Scripts, as bits.
const LATIN: u16 = 1;
const GREEK: u16 = 1 << 1;
const CYRILLIC: u16 = 1 << 2;
const HEBREW: u16 = 1 << 3;
const ARABIC: u16 = 1 << 4;
const DEVANAGARI: u16 = 1 << 5;
const THAI: u16 = 1 << 6;
const HANGUL: u16 = 1 << 7;
const KANA: u16 = 1 << 8;
const HAN: u16 = 1 << 9;
const OTHER: u16 = 1 << 10;

/// The script of a letter; `None` for digits, punctuation, symbols, emoji and spaces.
fn script(c: char) -> Option<u16> {
    let s = match c as u32 {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F | 0x1E00..=0x1EFF | 0xFF21..=0xFF3A | 0xFF41..=0xFF5A => LATIN,
        0x370..=0x3FF | 0x1F00..=0x1FFF => GREEK,
        0x400..=0x52F => CYRILLIC,
        0x590..=0x5FF => HEBREW,
        0x600..=0x6FF | 0x750..=0x77F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => ARABIC,
        0x900..=0x97F => DEVANAGARI,
        0xE00..=0xE7F => THAI,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => HANGUL,
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => KANA,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF => HAN,
        _ if c.is_alphabetic() => OTHER,
        _ => return None,
    };
    // Latin-1's × and ÷ sit inside the letter range.
    if c == '×' || c == '÷' { None } else { Some(s) }
}

/// The most frequent function words of the Latin-script languages told apart. A word may be in
/// several lists ("de", "la"); the language with the most matches wins, English on a tie.
const FUNCTION_WORDS: &[(Language, &[&str])] = &[
    (Language::En, &["the", "is", "are", "was", "what", "how", "why", "who", "which", "of", "and", "to", "in", "does", "do", "can", "you", "with", "for", "this", "that", "it", "be", "my", "i", "an", "when", "where", "should", "would", "there", "not"]),
    (Language::Fr, &["le", "la", "les", "est", "sont", "des", "du", "une", "un", "et", "que", "qui", "pour", "dans", "avec", "pas", "ce", "cette", "je", "vous", "comment", "pourquoi", "quel", "quelle", "où", "sur", "au", "aux", "ne", "il", "elle", "nous", "c'est", "qu'est-ce"]),
    (Language::De, &["der", "die", "das", "und", "ist", "sind", "nicht", "ein", "eine", "ich", "wie", "warum", "was", "wer", "mit", "für", "auf", "von", "zu", "den", "dem", "des", "im", "es", "sie", "wir", "kann", "welche", "wo"]),
    (Language::Es, &["el", "la", "los", "las", "es", "son", "de", "que", "y", "en", "un", "una", "por", "para", "con", "no", "cómo", "qué", "cuál", "dónde", "del", "al", "lo", "se", "está", "puedo", "porque"]),
    (Language::Pt, &["o", "a", "os", "as", "é", "são", "de", "que", "e", "em", "um", "uma", "por", "para", "com", "não", "como", "qual", "onde", "do", "da", "dos", "das", "no", "na", "se", "você", "porque"]),
    (Language::It, &["il", "lo", "la", "gli", "le", "è", "sono", "di", "che", "e", "in", "un", "una", "per", "con", "non", "come", "perché", "qual", "dove", "del", "della", "si", "cosa"]),
    (Language::Nl, &["de", "het", "een", "en", "is", "zijn", "van", "dat", "die", "niet", "hoe", "wat", "waarom", "wie", "met", "voor", "op", "ik", "je", "er", "kan"]),
];

/// What [`detect`] found: the language, and every script the text has letters in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detected {
    pub language: Language,
    scripts: u16,
}

/// How much of a text [`detect`] reads: its language is plain long before, and a 2 MiB prompt
/// costs no more than a short one.
const READ_BYTES: usize = 16 << 10;

/// The language of `text` (its first [`READ_BYTES`]). Han characters, kana and hangul carry about
/// a word each, so a text in which they are a fifth of the letters is in their language
/// ("Python里的列表怎么排序" is Chinese); any other script must have most of the letters.
pub fn detect(text: &str) -> Detected {
    let end = (0..=READ_BYTES.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let text = &text[..end];
    let mut counts = [0u32; 11];
    let mut scripts = 0u16;
    let mut letters = 0u32;
    for c in text.chars() {
        if let Some(s) = script(c) {
            scripts |= s;
            counts[s.trailing_zeros() as usize] += 1;
            letters += 1;
        }
    }
    let count = |s: u16| counts[s.trailing_zeros() as usize];
    let share = |n: u32| n as f32 / letters.max(1) as f32;
    let (han, kana, hangul) = (count(HAN), count(KANA), count(HANGUL));
    let language = if letters == 0 {
        Language::Und
    } else if kana > 0 && share(kana + han) >= 0.2 {
        Language::Ja
    } else if share(hangul) >= 0.2 {
        Language::Ko
    } else if share(han) >= 0.2 {
        Language::Zh
    } else {
        let (top, n) = [GREEK, CYRILLIC, HEBREW, ARABIC, DEVANAGARI, THAI, OTHER].into_iter().map(|s| (s, count(s))).max_by_key(|&(_, n)| n).unwrap_or((OTHER, 0));
        if share(n) > 0.5 {
            match top {
                GREEK => Language::El,
                CYRILLIC => Language::Ru,
                HEBREW => Language::He,
                ARABIC => Language::Ar,
                DEVANAGARI => Language::Hi,
                THAI => Language::Th,
                _ => Language::Other,
            }
        } else {
            latin_language(text)
        }
    };
    Detected { language, scripts }
}

/// The Latin-script language with the most function words in `text`; `und` with none.
fn latin_language(text: &str) -> Language {
    let mut scores = [0u32; FUNCTION_WORDS.len()];
    let lower = text.to_lowercase();
    for word in lower.split(|c: char| !(c.is_alphabetic() || c == '\'' || c == '-')).filter(|w| !w.is_empty()) {
        for (score, (_, words)) in scores.iter_mut().zip(FUNCTION_WORDS) {
            *score += u32::from(words.contains(&word));
        }
    }
    // English first, so it wins ties; another language needs two words of its own to win.
    let english = scores[0];
    let (best, score) = scores.iter().enumerate().skip(1).max_by_key(|&(i, s)| (*s, std::cmp::Reverse(i))).map(|(i, &s)| (i, s)).unwrap_or((0, 0));
    if score > english && score >= 2 {
        FUNCTION_WORDS[best].0
    } else if english > 0 {
        Language::En
    } else {
        Language::Und
    }
}

/// The languages an encoder's embeddings stand for (`model.languages`): `all`, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Languages {
    All,
    Only(Vec<Language>),
}

impl Default for Languages {
    fn default() -> Self {
        Languages::Only(vec![Language::En])
    }
}

impl Languages {
    /// Whether the encoder reads this text: its language is one of the encoder's and it has no
    /// letter of a script the encoder's languages are not written in. Undetermined Latin text
    /// ("x^2 integral") counts as read by an encoder of a Latin-script language, and a few Greek
    /// letters in Latin text are symbols (θ, λ), not Greek.
    pub fn reads(&self, text: &Detected) -> bool {
        let Languages::Only(list) = self else { return true };
        let allowed = list.iter().fold(0u16, |s, l| s | l.scripts());
        let latin = allowed & LATIN != 0;
        let language_ok = list.contains(&text.language) || (text.language == Language::Und && latin);
        let symbols = if latin && text.language != Language::El { GREEK } else { 0 };
        language_ok && text.scripts & !(allowed | symbols) == 0
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Languages::All)
    }
}

impl<'de> Deserialize<'de> for Languages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        let codes = match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => return Ok(Languages::All),
            Raw::Word(w) => vec![w],
            Raw::List(list) if list.is_empty() => return Err(serde::de::Error::custom("an empty list: an encoder reads at least one language (or `all`)")),
            Raw::List(list) => list,
        };
        codes.iter().map(|c| parse(c)).collect::<Result<_, _>>().map(Languages::Only).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(text: &str) -> &'static str {
        detect(text).language.code()
    }

    #[test]
    fn scripts_name_their_languages() {
        assert_eq!(lang("秦朝是哪一年建立的？"), "zh");
        assert_eq!(lang("Python里的列表怎么排序"), "zh", "Han characters carry a word each");
        assert_eq!(lang("東京タワーの高さは？"), "ja");
        assert_eq!(lang("서울의 인구는 얼마입니까?"), "ko");
        assert_eq!(lang("Какая столица Франции?"), "ru");
        assert_eq!(lang("ما هي عاصمة فرنسا؟"), "ar");
        assert_eq!(lang("Ποια είναι η πρωτεύουσα της Γαλλίας;"), "el");
        assert_eq!(lang("भारत की राजधानी क्या है?"), "hi");
        assert_eq!(lang("มหาสมุทรที่ใหญ่ที่สุดคืออะไร"), "th");
        assert_eq!(lang("12 + 7 = ?"), "und");
        assert_eq!(lang(""), "und");
    }

    #[test]
    fn function_words_tell_latin_languages_apart() {
        assert_eq!(lang("What is the capital of France?"), "en");
        assert_eq!(lang("Quelle est la capitale de la France ?"), "fr");
        assert_eq!(lang("Was ist die Hauptstadt von Frankreich?"), "de");
        assert_eq!(lang("¿Cuál es la capital de Francia?"), "es");
        assert_eq!(lang("Qual é a capital da França?"), "pt");
        assert_eq!(lang("Qual è la capitale della Francia?"), "it");
        assert_eq!(lang("Wat is de hoofdstad van Frankrijk?"), "nl");
        assert_eq!(lang("What does 'la vie en rose' mean in the song?"), "en", "a quoted phrase does not make it French");
        assert_eq!(lang("derivative x^2 sin x"), "und");
    }

    #[test]
    fn an_english_encoder_reads_english_and_undetermined_latin_text_only() {
        let en = Languages::default();
        let reads = |t: &str| en.reads(&detect(t));
        assert!(reads("How do I reverse a linked list in Python?"));
        assert!(reads("integral x^2 dx"));
        assert!(reads("What is the value of θ when sin θ = 1?"), "Greek letters in maths are symbols");
        assert!(reads("Is 12 × 3 larger than 35 ÷ 1?"));
        assert!(reads("🐱 or 🐶?"), "emoji are no script (the unknown-token rule covers them)");
        assert!(!reads("秦朝是哪一年建立的？"));
        assert!(!reads("What does 秦 mean?"), "one letter of an unread script is enough");
        assert!(!reads("Quelle est la capitale de la France ?"));
        assert!(!reads("Какая столица Франции?"));
        assert!(!reads("Ποια είναι η πρωτεύουσα της Γαλλίας;"));
    }

    #[test]
    fn a_multilingual_encoder_reads_what_it_lists() {
        assert!(Languages::All.reads(&detect("秦朝是哪一年建立的？")));
        let zh_en: Languages = serde_yaml_ng::from_str("[en, zh]").unwrap();
        assert!(zh_en.reads(&detect("秦朝是哪一年建立的？")));
        assert!(zh_en.reads(&detect("Python里的列表怎么排序")));
        assert!(!zh_en.reads(&detect("東京タワーの高さは？")), "kana is not Chinese");
        assert!(!zh_en.reads(&detect("서울의 인구는?")));
    }

    #[test]
    fn configs_name_languages_by_code() {
        assert_eq!(serde_yaml_ng::from_str::<Languages>("all").unwrap(), Languages::All);
        assert_eq!(serde_yaml_ng::from_str::<Languages>("zh").unwrap(), Languages::Only(vec![Language::Zh]));
        let err = serde_yaml_ng::from_str::<Languages>("[en, klingon]").unwrap_err().to_string();
        assert!(err.contains("unknown language 'klingon'"), "{err}");
        assert!(serde_yaml_ng::from_str::<Languages>("[]").is_err());
    }
}
