//! Who is asking: the cache partition key of a request. Nothing cached for one tenant is ever
//! served to another, so this must never return the same value for two different credentials.

use sha2::{Digest, Sha256};

/// The tenant from a trusted header when configured and present, else a hash of the credential
/// (`authorization`, then `api-key`), else empty (anonymous callers share one partition).
pub fn tenant_of(trusted_header: Option<String>, authorization: Option<String>, api_key: Option<String>) -> String {
    if let Some(t) = trusted_header.filter(|t| !t.is_empty()) {
        return format!("h:{t}");
    }
    match authorization.or(api_key).filter(|c| !c.is_empty()) {
        Some(credential) => {
            let digest = Sha256::digest(credential.as_bytes());
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("k:{hex}")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_then_credential_then_anonymous() {
        assert_eq!(tenant_of(Some("acme".into()), Some("Bearer x".into()), None), "h:acme");
        let a = tenant_of(None, Some("Bearer sk-a".into()), None);
        let b = tenant_of(None, Some("Bearer sk-b".into()), None);
        assert!(a.starts_with("k:") && a.len() == 34);
        assert_ne!(a, b);
        assert_eq!(a, tenant_of(Some(String::new()), Some("Bearer sk-a".into()), None));
        assert_eq!(tenant_of(None, None, Some("Bearer sk-a".into())), a);
        assert_eq!(tenant_of(None, None, None), "");
    }

    #[test]
    fn a_header_value_cannot_impersonate_a_credential_hash() {
        let hashed = tenant_of(None, Some("Bearer sk-a".into()), None);
        let spoof = tenant_of(Some(hashed.trim_start_matches("k:").into()), None, None);
        assert_ne!(hashed, spoof);
    }
}
