//! PII detection: structured identifiers found by pattern and confirmed by their checksums or
//! validity rules (Luhn for cards, ISO 7064 mod-97 for IBANs, SSA rules for SSNs, address
//! parsing for IPs), so that look-alike numbers are not reported.
//!
//! Findings carry byte spans into the text; overlapping candidates are resolved in favour of the
//! more specific type (email, IBAN, card, SSN, IP, then phone).

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiType {
    Email,
    Iban,
    CreditCard,
    UsSsn,
    IpAddress,
    Phone,
}

impl PiiType {
    pub const ALL: [PiiType; 6] = [PiiType::Email, PiiType::Iban, PiiType::CreditCard, PiiType::UsSsn, PiiType::IpAddress, PiiType::Phone];

    /// The name used in config, metrics and placeholders.
    pub fn name(self) -> &'static str {
        match self {
            PiiType::Email => "email",
            PiiType::Iban => "iban",
            PiiType::CreditCard => "credit_card",
            PiiType::UsSsn => "us_ssn",
            PiiType::IpAddress => "ip_address",
            PiiType::Phone => "phone",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiType,
    /// Byte offsets into the scanned text.
    pub start: usize,
    pub end: usize,
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("PII patterns are constants")
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b[a-z0-9][a-z0-9._%+-]*@(?:[a-z0-9-]+\.)+[a-z]{2,}\b"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d(?:[ -]?\d){11,18}\b"));
static PHONE_WORDS: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(?:phone|tel|telephone|call|mobile|cell|fax|number|contact|reach)\b"));
static DATE: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{4}-\d{2}-\d{2}"));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{3})([- ])(\d{2})([- ])(\d{4})\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})"));
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)|\b\d{1,4})(?:[ .-]?\d{2,5}){1,4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?\b"));

/// Every PII finding in `text`, ordered by position, without overlaps.
pub fn detect(text: &str) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    let add = |kind: PiiType, start: usize, end: usize, found: &mut Vec<Finding>| {
        if !found.iter().any(|f| start < f.end && f.start < end) {
            found.push(Finding { kind, start, end });
        }
    };
    for m in EMAIL.find_iter(text) {
        add(PiiType::Email, m.start(), m.end(), &mut found);
    }
    for m in IBAN.find_iter(text) {
        if let Some(len) = iban_prefix(m.as_str()) {
            add(PiiType::Iban, m.start(), m.start() + len, &mut found);
        }
    }
    for m in CARD.find_iter(text).filter(|m| card_valid(m.as_str())) {
        add(PiiType::CreditCard, m.start(), m.end(), &mut found);
    }
    for c in SSN.captures_iter(text) {
        let (Some(all), Some(area), Some(sep1), Some(group), Some(sep2), Some(serial)) = (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5)) else { continue };
        if sep1.as_str() == sep2.as_str() && ssn_valid(area.as_str(), group.as_str(), serial.as_str()) {
            add(PiiType::UsSsn, all.start(), all.end(), &mut found);
        }
    }
    for m in IPV4.find_iter(text).filter(|m| dotted_alone(text, m.start(), m.end())) {
        add(PiiType::IpAddress, m.start(), m.end(), &mut found);
    }
    for m in IPV6.find_iter(text).filter(|m| m.as_str().parse::<Ipv6Addr>().is_ok() && m.as_str().matches(':').count() >= 2) {
        add(PiiType::IpAddress, m.start(), m.end(), &mut found);
    }
    for m in PHONE.find_iter(text).filter(|m| phone_like(m.as_str(), phone_context(text, m.start()))) {
        add(PiiType::Phone, m.start(), m.end(), &mut found);
    }
    found.sort_by_key(|f| f.start);
    found
}

/// A dotted quad that is not part of a longer dotted number (a version such as 1.2.3.4.5).
fn dotted_alone(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let mut after = text.get(end..).map(str::chars).into_iter().flatten();
    let longer_after = after.next() == Some('.') && after.next().is_some_and(|c| c.is_ascii_digit());
    before != Some('.') && !longer_after
}

/// 7–15 digits, and a shape only phone numbers have: three or more groups, a `+`/`(` prefix,
/// 10+ digits, or a phone word just before. Two short bare groups are far more often house
/// numbers and postcodes, and ISO dates look like phone numbers too.
fn phone_like(candidate: &str, context: bool) -> bool {
    let number = candidate.split(['x', 'e']).next().unwrap_or("");
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let groups = number.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).count();
    let shaped = groups >= 3 || number.starts_with(['+', '(']) || digits >= 10 || context;
    (7..=15).contains(&digits) && shaped && !DATE.is_match(number)
}

/// Whether a phone word ("phone", "tel", "call", "mobile", "fax", ...) comes shortly before.
fn phone_context(text: &str, start: usize) -> bool {
    let from = text.floor_char_boundary(start.saturating_sub(40));
    PHONE_WORDS.is_match(text.get(from..start).unwrap_or(""))
}

/// Luhn checksum over 12–19 digits (Maestro starts at 12), with a known card-network prefix.
fn card_valid(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if !i.is_multiple_of(2) { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    let prefix2 = digits.iter().take(2).fold(0, |acc, d| acc * 10 + d);
    // Visa 4; Mastercard 22-27, 51-55; Amex 34, 37; Diners 30, 36, 38; JCB 35, 1800, 2131;
    // Discover/UnionPay 60-65, 81-82; Maestro 50, 56-69.
    let network = matches!(digits.first(), Some(4)) || matches!(prefix2, 18 | 21..=27 | 30 | 34..=38 | 50..=69 | 81..=82);
    sum.is_multiple_of(10) && network
}

/// The longest valid IBAN at the start of a candidate: the pattern also takes in words that
/// follow a spaced IBAN ("... 7654 32 please"), so drop trailing groups until it checks out.
fn iban_prefix(candidate: &str) -> Option<usize> {
    let mut end = candidate.len();
    loop {
        let head = candidate.get(..end)?.trim_end();
        if iban_valid(head) {
            return Some(head.len());
        }
        end = head.rfind(' ')?;
    }
}

/// ISO 13616: 15–34 characters, country letters, check digits, and mod-97 == 1.
fn iban_valid(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c {
            '0'..='9' => u64::from(c as u8 - b'0'),
            'A'..='Z' => u64::from(c as u8 - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

/// The SSA never issues area 000, 666 or 900–999, group 00 or serial 0000.
fn ssn_valid(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiType, &str)> {
        detect(text).into_iter().map(|f| (f.kind, &text[f.start..f.end])).collect()
    }

    #[test]
    fn finds_each_type_with_its_span() {
        for (text, kind, value) in [
            ("mail me at jane.doe+x@example.co.uk today", PiiType::Email, "jane.doe+x@example.co.uk"),
            ("card 4111 1111 1111 1111 exp 12/29", PiiType::CreditCard, "4111 1111 1111 1111"),
            ("card 5500-0000-0000-0004", PiiType::CreditCard, "5500-0000-0000-0004"),
            ("IBAN GB82 WEST 1234 5698 7654 32 please", PiiType::Iban, "GB82 WEST 1234 5698 7654 32"),
            ("iban DE89370400440532013000", PiiType::Iban, "DE89370400440532013000"),
            ("my ssn is 123-45-6789", PiiType::UsSsn, "123-45-6789"),
            ("server 192.168.10.254 is down", PiiType::IpAddress, "192.168.10.254"),
            ("v6 2001:db8:85a3::8a2e:370:7334 here", PiiType::IpAddress, "2001:db8:85a3::8a2e:370:7334"),
            ("call +44 20 7946 0958 now", PiiType::Phone, "+44 20 7946 0958"),
            ("call (555) 123-4567", PiiType::Phone, "(555) 123-4567"),
            ("or 555.123.4567x89", PiiType::Phone, "555.123.4567x89"),
            ("phone: 467 3395", PiiType::Phone, "467 3395"),
            ("fax 0961-7596216", PiiType::Phone, "0961-7596216"),
            ("maestro 6304 2737 3398", PiiType::CreditCard, "6304 2737 3398"),
            ("iban gb42nawi04454264788619", PiiType::Iban, "gb42nawi04454264788619"),
        ] {
            assert_eq!(kinds(text), vec![(kind, value)], "{text}");
        }
    }

    #[test]
    fn look_alikes_are_not_reported() {
        for (text, kind) in [
            ("card 4111 1111 1111 1112", PiiType::CreditCard), // Luhn fails
            ("IBAN GB82 WEST 1234 5698 7654 33", PiiType::Iban), // mod-97 fails
            ("ssn 000-12-3456 and 666-12-3456 and 123-00-4567 and 123-45 6789", PiiType::UsSsn),
            ("version 1.2.3.4.5 and 999.1.1.1", PiiType::IpAddress),
            ("ratio 3:2 at 10:30", PiiType::IpAddress),
        ] {
            assert!(kinds(text).iter().all(|(k, _)| *k != kind), "{text}: {:?}", kinds(text));
        }
        for text in [
            "it costs 12 dollars in 2024",
            "order 123456 shipped",
            "between 10:30 and 11:45",
            "at 2000-04-16 11:34:35 UTC",
            "17151 2450 Crown St",
            "postcode 75534-030",
        ] {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }

    #[test]
    fn several_findings_in_order() {
        let text = "a@b.io, 10.0.0.1 and 123-45-6789";
        let got: Vec<PiiType> = detect(text).into_iter().map(|f| f.kind).collect();
        assert_eq!(got, vec![PiiType::Email, PiiType::IpAddress, PiiType::UsSsn]);
    }

    #[test]
    fn checksums() {
        assert!(card_valid("378282246310005"));
        assert!(!card_valid("378282246310006"));
        assert!(iban_valid("FR1420041010050500013M02606"));
        assert!(!iban_valid("FR1420041010050500013M02607"));
    }
}
