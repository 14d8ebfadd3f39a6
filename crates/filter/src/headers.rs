//! Header hygiene: which values may become headers, which request headers only the filter may
//! set, and a bounds-checked reader for the host's serialized header map.
//!
//! Envoy writes a header value the filter sets as it is: a CR/LF in it splits the response
//! (a client-chosen `Set-Cookie`, or a whole forged second response), and NUL/DEL make Envoy
//! refuse the upstream request. So nothing becomes a header before [`is_valid_value`] agrees.

/// Request headers the filter sets (Envoy routes on `x-vane-model`). They are removed from every
/// request, handled or not, so a client can never pick a cluster or forge a verdict.
pub const OWN_REQUEST_HEADERS: [&str; 11] = [
    "x-vane-model",
    "x-vane-category",
    "x-vane-confidence",
    "x-vane-language",
    "x-vane-reasoning",
    "x-vane-pii",
    "x-vane-jailbreak",
    "x-vane-fallback",
    "x-vane-cache",
    "x-vane-similarity",
    "x-vane-cache-entry",
];

/// Whether `value` can be sent as a header value unchanged: no control characters (CR, LF,
/// NUL, tab, ...), no DEL, and no leading or trailing space (HTTP would trim it, so the value
/// Envoy routes on would differ from the one the filter chose). Non-ASCII text is allowed.
pub fn is_valid_value(value: &str) -> bool {
    !value.starts_with(' ') && !value.ends_with(' ') && !value.chars().any(|c| c.is_ascii_control())
}

/// Decodes the host's header-map serialization (`proxy_get_header_map_pairs`): a u32 count,
/// then a (name length, value length) u32 pair per entry, then each name and value followed by
/// a NUL. The SDK's own decoder panics on malformed input or non-UTF-8 names; this one returns
/// `None` instead. Names and values stay bytes.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut pairs = Vec::with_capacity(count.min(bytes.len() / 8));
    for n in 0..count {
        let sizes = 4 + n * 8;
        let (name_len, value_len) = (u32_at(sizes)?, u32_at(sizes + 4)?);
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data += name_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data += value_len + 1;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The inverse of [`decode_pairs`], for tests that play the host.
#[cfg(test)]
pub(crate) fn encode_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(*k);
        out.push(0);
        out.extend(*v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_become_headers() {
        for ok in ["auto", "math-model", "meta-llama/Llama-3.1-8B-Instruct", "qwen3:32b", "modèle 2", "0.912"] {
            assert!(is_valid_value(ok), "{ok:?}");
        }
        for bad in ["x\r\nSet-Cookie: a=1", "x\n", "x\r", "a\0b", "a\u{7f}", "a\tb", " auto", "auto ", "\u{1b}[31m"] {
            assert!(!is_valid_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn decodes_pairs_with_duplicates_and_raw_bytes() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/v1/chat/completions"), (b"x-tenant", b"a"), (b"x-tenant", b"\xff\xfe"), (b"e", b"")];
        assert_eq!(decode_pairs(&encode_pairs(&pairs)).unwrap(), pairs);
        assert_eq!(decode_pairs(b"").unwrap(), Vec::<(&[u8], &[u8])>::new());
    }

    #[test]
    fn malformed_maps_are_none_not_a_panic() {
        let good = encode_pairs(&[(b"name", b"value")]);
        for cut in 1..good.len() - 1 {
            assert!(decode_pairs(&good[..cut]).is_none(), "cut at {cut}");
        }
        assert!(decode_pairs(&[0xff, 0xff, 0xff, 0xff]).is_none(), "a count beyond the data");
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_pairs(&huge).is_none(), "a length beyond the data");
    }
}
