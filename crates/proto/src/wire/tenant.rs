//! The tenant key of a request, as the filter sends it in `RouteRequest.tenant` and the
//! sidecar's cache admin API derives it from a key it is given (`{"api_key": ...}`). Both sides
//! call these functions, so a credential always names the same partition.

use sha2::{Digest, Sha256};

/// First 128 bits of SHA-256 of `bytes`, as 32 lower-case hex digits.
///
/// ```
/// assert_eq!(vane_proto::wire::tenant::hash(b"Bearer sk-a"), "49aa12bb503b524dee8b36d203ce9d31");
/// ```
pub fn hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The tenant of a request identified by a credential (an `authorization` value, an API key,
/// a cookie value: the raw bytes as sent): `k:<hash>`.
///
/// ```
/// assert_eq!(vane_proto::wire::tenant::of_credential(b"Bearer sk-a"), "k:49aa12bb503b524dee8b36d203ce9d31");
/// ```
pub fn of_credential(credential: &[u8]) -> String {
    format!("k:{}", hash(credential))
}

/// The tenant named by a trusted tenant header: `h:<value>` for UTF-8, else `hb:<hash>`, so
/// two values differing only in invalid bytes stay two tenants. The caller has already
/// refused empty, repeated or comma-joined values.
///
/// ```
/// use vane_proto::wire::tenant::of_header;
/// assert_eq!(of_header(b"acme"), "h:acme");
/// assert!(of_header(b"t\xff").starts_with("hb:"));
/// ```
pub fn of_header(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(name) => format!("h:{name}"),
        Err(_) => format!("hb:{}", hash(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_values() {
        // Changing these orphans every cached entry and breaks the admin API's api_key lookup.
        assert_eq!(of_credential(b"Bearer sk-a"), "k:49aa12bb503b524dee8b36d203ce9d31");
        assert_eq!(hash(b""), "e3b0c44298fc1c149afbf4c8996fb924");
        assert_eq!(of_header(b"acme"), "h:acme");
    }

    #[test]
    fn different_bytes_are_different_tenants() {
        assert_ne!(of_credential(b"Bearer sk-a"), of_credential(b"Bearer sk-b"));
        assert_ne!(of_credential(b"\xff\xfe"), of_credential(b"\xfe\xff"));
        assert_ne!(of_header(b"t\xff"), of_header(b"t\xfe"));
        assert_eq!(of_header(b"t\xff"), format!("hb:{}", hash(b"t\xff")));
    }

    #[test]
    fn a_header_value_cannot_impersonate_a_credential() {
        let key = of_credential(b"Bearer sk-a");
        assert_ne!(of_header(key.as_bytes()), key);
        assert_ne!(of_header(key.trim_start_matches("k:").as_bytes()), key);
    }
}
