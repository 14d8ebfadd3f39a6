//! The filter's configuration: the JSON string in Envoy's `PluginConfig.configuration`.
//!
//! Unknown fields are rejected and every error names its field, so a typo fails the
//! `on_configure` call (Envoy logs it and refuses the plugin) instead of being ignored.

use serde::Deserialize;

use crate::url::percent_decode;

/// What to do when the sidecar cannot answer (down, slow, erroring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Forward the request untouched with `x-vane-fallback: <reason>`.
    Open,
    /// Answer 503 with an OpenAI-format error.
    Closed,
}

/// Where a request may carry its credential. In JSON: `{"header": "x-api-key"}`,
/// `{"query": "key"}`, `{"cookie": "session"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum CredentialSource {
    /// A request header (the name is matched case-insensitively).
    Header(String),
    /// A query-string parameter, e.g. Google-style `?key=`.
    Query(String),
    /// A cookie by name.
    Cookie(String),
}

/// OpenAI `authorization`, Azure `api-key`, Anthropic `x-api-key`, Google-style `?key=`.
fn default_credentials() -> Vec<CredentialSource> {
    use CredentialSource::{Header, Query};
    vec![Header("authorization".into()), Header("api-key".into()), Header("x-api-key".into()), Query("key".into())]
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Envoy cluster (HTTP/2) of the sidecar's gRPC server.
    pub sidecar_cluster: String,
    /// The `:authority` of the calls to the sidecar. Envoy sends the cluster name as the
    /// authority unless told otherwise, and the sidecar's HTTP/2 server resets every call whose
    /// authority is not a host name: a cluster named the way Istio names them
    /// (`outbound|50051||vane-sidecar.vane.svc.cluster.local`) needs this set, e.g. to
    /// `vane-sidecar.vane.svc.cluster.local:50051`.
    pub sidecar_authority: Option<String>,
    /// Deadline for one Route call; past it the request fails open (or closed).
    pub timeout_ms: u64,
    /// Request paths the filter handles (query string ignored); everything else passes through.
    pub paths: Vec<String>,
    /// Largest request body the filter buffers; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest response body copied for the cache; larger answers are simply not stored.
    pub max_response_bytes: usize,
    pub failure_mode: FailureMode,
    /// Header that names the tenant, set by a trusted layer (Envoy must remove the client's
    /// copy first: see envoy/envoy.yaml.tmpl). Sent more than once, it is a 400. When unset or
    /// absent the tenant is a hash of the request's credential.
    pub tenant_header: Option<String>,
    /// Where credentials are looked for, in order; the first one present names the tenant.
    pub credentials: Vec<CredentialSource>,
    /// Whether requests with no credential share one cache partition. Off: they are neither
    /// answered from nor written to the cache (the sidecar gets CACHE_CONTROL_NO_STORE).
    pub anonymous_cache: bool,
    /// How often queued cache writes are sent to the sidecar.
    pub store_flush_ms: u64,
    /// Cache writes waiting to be sent; beyond this they are dropped (and logged).
    pub max_pending_stores: usize,
    /// What `dispatch_grpc_call` names the sidecar by (see [`Config::sidecar_target`]).
    #[serde(skip)]
    sidecar_target: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sidecar_cluster: "vane_sidecar".into(),
            sidecar_authority: None,
            timeout_ms: 200,
            paths: vec!["/v1/chat/completions".into()],
            max_body_bytes: 1 << 20,
            max_response_bytes: 4 << 20,
            failure_mode: FailureMode::Open,
            tenant_header: None,
            credentials: default_credentials(),
            anonymous_cache: false,
            store_flush_ms: 10,
            max_pending_stores: 1024,
            sidecar_target: "vane_sidecar".into(),
        }
    }
}

impl Config {
    /// Parses and validates; an empty configuration means all defaults.
    pub fn from_json(raw: &[u8]) -> Result<Config, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let mut config: Config = serde_json::from_slice(raw).map_err(|e| format!("configuration: {e}"))?;
        // Envoy hands the filter lower-case header names.
        if let Some(h) = config.tenant_header.as_mut() {
            h.make_ascii_lowercase();
        }
        for source in &mut config.credentials {
            if let CredentialSource::Header(h) = source {
                h.make_ascii_lowercase();
            }
        }
        let mut errors = Vec::new();
        if config.sidecar_cluster.is_empty() {
            errors.push("sidecar_cluster: must not be empty");
        }
        match config.sidecar_authority.as_deref() {
            None if !config.sidecar_cluster.is_empty() && !is_host(&config.sidecar_cluster) => errors.push(
                "sidecar_cluster: not a host name, and Envoy would send it as the calls' :authority (the sidecar resets them): \
                 set sidecar_authority, e.g. vane-sidecar.vane.svc.cluster.local:50051",
            ),
            Some(authority) if !is_host(authority) => errors.push("sidecar_authority: must be a host name, optionally with :port"),
            _ => {}
        }
        match sidecar_target(&config.sidecar_cluster, config.sidecar_authority.as_deref()) {
            Some(target) => config.sidecar_target = target,
            None => errors.push("sidecar_cluster, sidecar_authority: at most 123 bytes together"),
        }
        if config.timeout_ms == 0 {
            errors.push("timeout_ms: must be at least 1");
        }
        if config.paths.is_empty() || config.paths.iter().any(|p| !p.starts_with('/')) {
            errors.push("paths: must be a non-empty list of paths starting with '/'");
        }
        if config.max_body_bytes == 0 {
            errors.push("max_body_bytes: must be at least 1");
        }
        if config.store_flush_ms == 0 {
            errors.push("store_flush_ms: must be at least 1");
        }
        if config.tenant_header.as_deref().is_some_and(str::is_empty) {
            errors.push("tenant_header: must not be empty when set");
        }
        let credential_name = |c: &CredentialSource| match c {
            CredentialSource::Header(n) | CredentialSource::Query(n) | CredentialSource::Cookie(n) => n.is_empty(),
        };
        if config.credentials.iter().any(credential_name) {
            errors.push("credentials: every header, query and cookie name must be non-empty");
        }
        if errors.is_empty() { Ok(config) } else { Err(errors.join("; ")) }
    }

    /// The sidecar's name for `dispatch_grpc_call`: the cluster name, or with `sidecar_authority`
    /// a serialized `envoy.config.core.v3.GrpcService` naming both. Envoy reads the argument as
    /// that message first and as a cluster name when it does not parse; neither form changes
    /// which cluster is called.
    pub fn sidecar_target(&self) -> &str {
        &self.sidecar_target
    }

    /// Whether the filter handles requests to `path` (the query string is ignored). The path is
    /// compared as an upstream router would read it, percent-decoded and with repeated slashes
    /// merged: Starlette (vLLM) serves `/v1/chat/%63ompletions` and `/v1/chat%2Fcompletions` as
    /// the chat route. Envoy's `normalize_path` and escaped-slash settings already hand the
    /// filter canonical paths; this keeps a configuration without them from being a way around.
    pub fn handles_path(&self, path: &str) -> bool {
        let path = canonical_path(path);
        self.paths.contains(&path)
    }
}

/// Letters, digits and `-._~:[]`: what a host, `host:port` or `[v6]:port` is made of.
fn is_host(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b))
}

/// `envoy.config.core.v3.GrpcService`, only its `envoy_grpc` target.
#[derive(Clone, PartialEq, prost::Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
}

/// `envoy.config.core.v3.GrpcService.EnvoyGrpc`.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    cluster_name: String,
    #[prost(string, tag = "2")]
    authority: String,
}

/// See [`Config::sidecar_target`]. The SDK passes the target to Envoy as a `&str`, so the
/// encoded message must be UTF-8: it is while its length prefixes are one byte each (under
/// 128), i.e. while the two names are at most 123 bytes together; `None` beyond that.
fn sidecar_target(cluster: &str, authority: Option<&str>) -> Option<String> {
    let Some(authority) = authority else { return Some(cluster.to_string()) };
    let service = GrpcService { envoy_grpc: Some(EnvoyGrpc { cluster_name: cluster.into(), authority: authority.into() }) };
    String::from_utf8(prost::Message::encode_to_vec(&service)).ok()
}

/// `path` without its query, percent-decoded once, with runs of `/` merged into one.
fn canonical_path(path: &str) -> String {
    let mut decoded = percent_decode(path.split('?').next().unwrap_or(path).as_bytes());
    decoded.dedup_by(|a, b| *a == b'/' && *b == b'/');
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_means_defaults() {
        assert_eq!(Config::from_json(b"").unwrap(), Config::default());
        assert_eq!(Config::from_json(b" {} ").unwrap(), Config::default());
    }

    #[test]
    fn fields_override_defaults() {
        let c = Config::from_json(br#"{"timeout_ms": 50, "failure_mode": "closed", "tenant_header": "x-tenant"}"#).unwrap();
        assert_eq!(c.timeout_ms, 50);
        assert_eq!(c.failure_mode, FailureMode::Closed);
        assert_eq!(c.tenant_header.as_deref(), Some("x-tenant"));
        assert_eq!(c.sidecar_cluster, "vane_sidecar");
    }

    #[test]
    fn credential_sources_default_and_override() {
        use CredentialSource::*;
        let d = Config::default();
        assert_eq!(d.credentials, vec![Header("authorization".into()), Header("api-key".into()), Header("x-api-key".into()), Query("key".into())]);
        assert!(!d.anonymous_cache);
        let c = Config::from_json(br#"{"credentials": [{"header": "X-Token"}, {"cookie": "sid"}], "anonymous_cache": true, "tenant_header": "X-Tenant"}"#).unwrap();
        assert_eq!(c.credentials, vec![Header("x-token".into()), Cookie("sid".into())]);
        assert!(c.anonymous_cache);
        assert_eq!(c.tenant_header.as_deref(), Some("x-tenant"));
    }

    #[test]
    fn errors_name_the_field() {
        for (raw, field) in [
            (&br#"{"timeout_ms": 0}"#[..], "timeout_ms"),
            (br#"{"paths": ["v1/chat"]}"#, "paths"),
            (br#"{"paths": []}"#, "paths"),
            (br#"{"sidecar_cluster": ""}"#, "sidecar_cluster"),
            (br#"{"timeotu_ms": 5}"#, "timeotu_ms"),
            (br#"{"failure_mode": "sometimes"}"#, "sometimes"),
            (br#"{"tenant_header": ""}"#, "tenant_header"),
            (br#"{"credentials": [{"header": ""}]}"#, "credentials"),
            (br#"{"credentials": [{"form": "key"}]}"#, "form"),
            (br#"{"anonymous_cache": "yes"}"#, "boolean"),
            (b"not json", "configuration"),
        ] {
            let err = Config::from_json(raw).unwrap_err();
            assert!(err.contains(field), "{err:?} should mention {field}");
        }
    }

    #[test]
    fn an_istio_cluster_name_needs_an_authority() {
        let istio = "outbound|50051||vane-sidecar.vane.svc.cluster.local";
        let err = Config::from_json(format!(r#"{{"sidecar_cluster": "{istio}"}}"#).as_bytes()).unwrap_err();
        assert!(err.contains("sidecar_authority"), "{err}");
        let raw = format!(r#"{{"sidecar_cluster": "{istio}", "sidecar_authority": "vane-sidecar.vane.svc.cluster.local:50051"}}"#);
        let c = Config::from_json(raw.as_bytes()).unwrap();
        let decoded: GrpcService = prost::Message::decode(c.sidecar_target().as_bytes()).unwrap();
        let envoy_grpc = decoded.envoy_grpc.unwrap();
        assert_eq!((envoy_grpc.cluster_name.as_str(), envoy_grpc.authority.as_str()), (istio, "vane-sidecar.vane.svc.cluster.local:50051"));
    }

    #[test]
    fn a_host_named_cluster_is_called_by_its_name() {
        assert_eq!(Config::default().sidecar_target(), "vane_sidecar");
        assert_eq!(Config::from_json(br#"{"sidecar_cluster": "sidecar.local:50051"}"#).unwrap().sidecar_target(), "sidecar.local:50051");
    }

    #[test]
    fn the_target_must_pass_as_text() {
        let at_limit = format!(r#"{{"sidecar_cluster": "{}", "sidecar_authority": "{}"}}"#, "c".repeat(100), "a".repeat(23));
        assert!(Config::from_json(at_limit.as_bytes()).is_ok());
        let over = format!(r#"{{"sidecar_cluster": "{}", "sidecar_authority": "{}"}}"#, "c".repeat(100), "a".repeat(24));
        assert!(Config::from_json(over.as_bytes()).unwrap_err().contains("123"));
        assert!(Config::from_json(br#"{"sidecar_authority": "a b"}"#).unwrap_err().contains("sidecar_authority"));
    }

    #[test]
    fn paths_match_without_query() {
        let c = Config::default();
        assert!(c.handles_path("/v1/chat/completions"));
        assert!(c.handles_path("/v1/chat/completions?x=1"));
        assert!(!c.handles_path("/v1/completions"));
        assert!(!c.handles_path("/v1/chat/completions/extra"));
    }

    #[test]
    fn paths_match_as_an_upstream_decodes_them() {
        let c = Config::default();
        for encoded in ["/v1/chat/%63ompletions", "/v1/chat%2Fcompletions", "/v1/chat%2fcompletions", "//v1//chat/completions", "/v1/%63hat/completions?x=%2F"] {
            assert!(c.handles_path(encoded), "{encoded}");
        }
        for other in ["/v1/chat/%2563ompletions", "/v1/chat/completions%2F", "/v1/chat/completions%", "/v1/chat/complet%zzions", "/v1/chat/%ff"] {
            assert!(!c.handles_path(other), "{other}");
        }
    }
}
