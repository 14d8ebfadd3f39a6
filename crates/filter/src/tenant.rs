//! Who is asking: the cache partition key of a request. Nothing cached for one tenant is ever
//! served to another, so this must never return the same value for two different credentials.

use vane_proto::v1::CacheControl;
use vane_proto::wire::tenant as key;

use crate::config::{Config, CredentialSource};
use crate::request::BadRequest;
use crate::url::percent_decode;

/// Request headers as the host gives them: lower-case names, raw values, duplicates kept.
pub type HeaderPairs<'a> = [(&'a [u8], &'a [u8])];

/// The tenant of a request: the configured trusted header when present, else a hash of the
/// first credential found (`config.credentials`, in order), else empty (anonymous).
///
/// The trusted header sent more than once, or with a comma (two values joined by a proxy), is
/// refused: whichever copy won would be a guess, and a proxy that appends rather than
/// overwrites would leave the client's own value in force.
///
/// Values are raw bytes: HTTP allows non-UTF-8 bytes, and two credentials that differ only
/// there are still two tenants. Every credential form hashes its raw value the same way
/// (`vane_proto::wire::tenant`), so the sidecar's cache admin API can find a tenant from the
/// key it was given.
pub fn identify(config: &Config, headers: &HeaderPairs) -> Result<String, BadRequest> {
    if let Some(name) = config.tenant_header.as_deref() {
        let mut values = values_of(headers, name);
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => return Err(refused(name, "more than once")),
            (Some(v), None) if v.contains(&b',') => return Err(refused(name, "with several values")),
            (Some(v), None) if !v.is_empty() => return Ok(key::of_header(v)),
            _ => {}
        }
    }
    let credential = config.credentials.iter().find_map(|source| match source {
        CredentialSource::Header(name) => values_of(headers, name).find(|v| !v.is_empty()),
        CredentialSource::Query(name) => values_of(headers, ":path").next().and_then(|path| query_param(path, name)),
        CredentialSource::Cookie(name) => values_of(headers, "cookie").find_map(|c| cookie(c, name)),
    });
    Ok(credential.map(key::of_credential).unwrap_or_default())
}

/// What the sidecar may do with the cache for this request: the client's
/// `x-vane-cache-control`, and never the cache at all for an anonymous request unless the
/// configuration shares one partition among them (`anonymous_cache`).
pub fn cache_control(client: Option<&[u8]>, tenant: &str, anonymous_cache: bool) -> CacheControl {
    if tenant.is_empty() && !anonymous_cache {
        return CacheControl::NoStore;
    }
    match client.map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase()).as_deref() {
        Some("no-store") => CacheControl::NoStore,
        Some("no-cache") => CacheControl::NoCache,
        _ => CacheControl::Default,
    }
}

fn refused(header: &str, how: &str) -> BadRequest {
    BadRequest { message: format!("The '{header}' header was sent {how}; send it exactly once."), param: None }
}

fn values_of<'a>(headers: &'a HeaderPairs<'a>, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
}

/// The raw value of the first non-empty `name=` parameter of the query (the name compared
/// percent-decoded, as the upstream reads it).
fn query_param<'a>(path: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let query = path.splitn(2, |b| *b == b'?').nth(1)?;
    query.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let key = kv.next()?;
        let value = kv.next().filter(|v| !v.is_empty())?;
        (percent_decode(key) == name.as_bytes()).then_some(value)
    })
}

/// The value of cookie `name` in one `cookie` header (`a=1; b=2`).
fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let key = kv.next()?.trim_ascii();
        let value = kv.next()?.trim_ascii();
        (key == name.as_bytes() && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(config: &Config, headers: &[(&str, &[u8])]) -> Result<String, BadRequest> {
        let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        identify(config, &pairs)
    }

    fn with(json: &str) -> Config {
        Config::from_json(json.as_bytes()).unwrap()
    }

    const PINNED: &str = "k:49aa12bb503b524dee8b36d203ce9d31"; // hash of "Bearer sk-a"

    #[test]
    fn header_then_credential_then_anonymous() {
        let c = with(r#"{"tenant_header": "x-tenant"}"#);
        assert_eq!(tenant(&c, &[("x-tenant", b"acme"), ("authorization", b"Bearer x")]).unwrap(), "h:acme");
        let a = tenant(&c, &[("authorization", b"Bearer sk-a")]).unwrap();
        assert_eq!(a, PINNED, "pinned: the sidecar's cache admin API derives the same");
        assert_ne!(a, tenant(&c, &[("authorization", b"Bearer sk-b")]).unwrap());
        assert_eq!(tenant(&c, &[("x-tenant", b""), ("authorization", b"Bearer sk-a")]).unwrap(), a);
        assert_eq!(tenant(&c, &[("api-key", b"Bearer sk-a")]).unwrap(), a);
        assert_eq!(tenant(&c, &[]).unwrap(), "");
    }

    #[test]
    fn every_default_credential_form_is_a_tenant() {
        let c = Config::default();
        let forms: [&[(&str, &[u8])]; 5] = [
            &[("authorization", b"Bearer sk-1")],
            &[("api-key", b"azure-1")],
            &[("x-api-key", b"sk-ant-1")],
            &[(":path", b"/v1/chat/completions?alt=json&key=goog-1")],
            &[(":path", b"/v1/chat/completions?%6Bey=goog-2")],
        ];
        let tenants: Vec<String> = forms.iter().map(|h| tenant(&c, h).unwrap()).collect();
        for (t, h) in tenants.iter().zip(forms) {
            assert!(t.starts_with("k:"), "{h:?} gave {t:?}");
        }
        let mut unique = tenants.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tenants.len(), "{tenants:?}");
        for anonymous in [&[(":path", &b"/v1/chat/completions?key="[..])][..], &[(":path", b"/v1/chat/completions?keys=x")], &[("cookie", b"key=x")]] {
            assert_eq!(tenant(&c, anonymous).unwrap(), "", "{anonymous:?}");
        }
    }

    #[test]
    fn a_configured_cookie_is_a_credential() {
        let c = with(r#"{"credentials": [{"cookie": "session"}]}"#);
        let t = tenant(&c, &[("cookie", b"theme=dark; session=abc ; x=1")]).unwrap();
        assert_eq!(t, tenant(&c, &[("cookie", b"session=abc")]).unwrap());
        assert_ne!(t, tenant(&c, &[("cookie", b"session=abd")]).unwrap());
        assert_eq!(tenant(&c, &[("cookie", b"xsession=abc")]).unwrap(), "");
        assert_eq!(tenant(&c, &[("authorization", b"Bearer sk-a")]).unwrap(), "", "only the configured forms count");
    }

    #[test]
    fn the_first_configured_form_present_wins() {
        let c = Config::default();
        let both = tenant(&c, &[("x-api-key", b"k2"), ("authorization", b"Bearer sk-a")]).unwrap();
        assert_eq!(both, PINNED);
    }

    #[test]
    fn a_tenant_header_sent_twice_or_joined_is_refused() {
        let c = with(r#"{"tenant_header": "x-tenant"}"#);
        assert!(tenant(&c, &[("x-tenant", b"evil"), ("x-tenant", b"acme")]).is_err());
        assert!(tenant(&c, &[("x-tenant", b"evil, acme")]).is_err());
        let err = tenant(&c, &[("X-Tenant", b"evil"), ("x-tenant", b"")]).unwrap_err();
        assert!(err.message.contains("x-tenant"), "{err:?}");
        let unset = Config::default(); // without tenant_header the header means nothing
        assert_eq!(tenant(&unset, &[("x-tenant", b"a"), ("x-tenant", b"b")]).unwrap(), "");
    }

    #[test]
    fn a_header_value_cannot_impersonate_a_credential_hash() {
        let c = with(r#"{"tenant_header": "x-tenant"}"#);
        let spoof = tenant(&c, &[("x-tenant", PINNED.trim_start_matches("k:").as_bytes())]).unwrap();
        assert_ne!(spoof, PINNED);
    }

    #[test]
    fn credentials_differing_only_in_invalid_utf8_are_different_tenants() {
        let c = with(r#"{"tenant_header": "x-tenant"}"#);
        assert_ne!(tenant(&c, &[("authorization", b"Bearer \xff\xfe")]).unwrap(), tenant(&c, &[("authorization", b"Bearer \xfe\xff")]).unwrap());
        let hx = tenant(&c, &[("x-tenant", b"t\xff")]).unwrap();
        assert_ne!(hx, tenant(&c, &[("x-tenant", b"t\xfe")]).unwrap());
        assert!(hx.starts_with("hb:"));
    }

    #[test]
    fn anonymous_requests_never_touch_the_cache_unless_configured() {
        assert_eq!(cache_control(None, "", false), CacheControl::NoStore);
        assert_eq!(cache_control(Some(b"no-cache"), "", false), CacheControl::NoStore);
        assert_eq!(cache_control(None, "", true), CacheControl::Default);
        assert_eq!(cache_control(None, PINNED, false), CacheControl::Default);
        assert_eq!(cache_control(Some(b" No-Cache "), PINNED, false), CacheControl::NoCache);
        assert_eq!(cache_control(Some(b"no-store"), PINNED, false), CacheControl::NoStore);
        assert_eq!(cache_control(Some(b"\xff"), PINNED, false), CacheControl::Default);
    }
}
