//! Who is asking: the cache partition key of a request. Nothing cached for one tenant is ever
//! served to another, so this must never return the same value for two different credentials.

use sha2::{Digest, Sha256};

/// The tenant from a trusted header when configured and present, else a hash of the credential
/// (`authorization`, then `api-key`), else empty (anonymous callers share one partition).
/// Header values are raw bytes: HTTP allows non-UTF-8 bytes, and two credentials that differ
/// only there are still two tenants.
pub fn tenant_of(trusted_header: Option<Vec<u8>>, authorization: Option<Vec<u8>>, api_key: Option<Vec<u8>>) -> String {
    if let Some(t) = trusted_header.filter(|t| !t.is_empty()) {
        return match String::from_utf8(t) {
            Ok(name) => format!("h:{name}"),
            Err(e) => format!("hb:{}", hash(e.as_bytes())),
        };
    }
    match authorization.or(api_key).filter(|c| !c.is_empty()) {
        Some(credential) => format!("k:{}", hash(&credential)),
        None => String::new(),
    }
}

/// First 128 bits of SHA-256, hex.
fn hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn header_then_credential_then_anonymous() {
        assert_eq!(tenant_of(b("acme"), b("Bearer x"), None), "h:acme");
        let a = tenant_of(None, b("Bearer sk-a"), None);
        let other = tenant_of(None, b("Bearer sk-b"), None);
        assert_eq!(a, "k:49aa12bb503b524dee8b36d203ce9d31", "pinned: the sidecar's cache admin API derives the same");
        assert_ne!(a, other);
        assert_eq!(a, tenant_of(b(""), b("Bearer sk-a"), None));
        assert_eq!(tenant_of(None, None, b("Bearer sk-a")), a);
        assert_eq!(tenant_of(None, None, None), "");
    }

    #[test]
    fn a_header_value_cannot_impersonate_a_credential_hash() {
        let hashed = tenant_of(None, b("Bearer sk-a"), None);
        let spoof = tenant_of(b(hashed.trim_start_matches("k:")), None, None);
        assert_ne!(hashed, spoof);
    }

    #[test]
    fn credentials_differing_only_in_invalid_utf8_are_different_tenants() {
        let x = tenant_of(None, Some(b"Bearer \xff\xfe".to_vec()), None);
        let y = tenant_of(None, Some(b"Bearer \xfe\xff".to_vec()), None);
        assert_ne!(x, y);
        let hx = tenant_of(Some(b"t\xff".to_vec()), None, None);
        let hy = tenant_of(Some(b"t\xfe".to_vec()), None, None);
        assert_ne!(hx, hy);
        assert!(hx.starts_with("hb:"));
    }
}
