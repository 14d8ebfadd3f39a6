//! The bits of URL handling the filter needs: reading a path and a query the way an upstream
//! router does.

/// `%XX` decoded once; a `%` not followed by two hex digits is kept as it is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match (b, hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_keeps_malformed_escapes() {
        for (raw, decoded) in [("%63hat", "chat"), ("a%2Fb%2fc", "a/b/c"), ("%2563", "%63"), ("100%", "100%"), ("%zz%4", "%zz%4"), ("", "")] {
            assert_eq!(percent_decode(raw.as_bytes()), decoded.as_bytes(), "{raw}");
        }
        assert_eq!(percent_decode(b"%ff"), vec![0xff]);
    }
}
