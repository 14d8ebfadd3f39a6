//! `tracing:` — OTLP trace export, off by default. The usual `OTEL_*` environment variables
//! override the file ([`TracingConfig::with_env`]), so a deployment can turn tracing on or point
//! it elsewhere without editing `vane.yaml`.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Export spans (`OTEL_TRACES_EXPORTER=otlp` turns it on, `none` or `OTEL_SDK_DISABLED=true` off).
    pub enabled: bool,
    /// The collector: for `grpc` its address, for `http` its base URL (`/v1/traces` is added).
    /// Default `http://127.0.0.1:4317` (grpc) or `:4318` (http).
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    /// Share of new traces recorded (by trace id, so every span of a trace agrees); a trace the
    /// client already sampled or dropped follows the client's decision.
    pub sampling_ratio: f64,
    pub service_name: String,
    /// Finished spans waiting for export; beyond it they are dropped, and counted in
    /// `vane_trace_spans_dropped_total{reason="queue_full"}`: a slow collector never slows a request.
    pub max_queue: usize,
    /// Debugging only: put the prompt and the answer on the spans (`vane.prompt`,
    /// `vane.completion`). Off, no text of a request ever leaves the sidecar in a span.
    pub record_text: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC (port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    Http,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { enabled: false, endpoint: None, protocol: Protocol::Grpc, sampling_ratio: 1.0, service_name: "vane-sidecar".into(), max_queue: 2048, record_text: false }
    }
}

impl TracingConfig {
    /// Every problem with this section, each as `tracing.<field>: <why>`.
    pub fn check(&self, errors: &mut Vec<String>) {
        self.check_as(|field| format!("tracing.{field}"), errors);
    }

    /// `check` for values that may have come from the environment: each is named by the
    /// variable it came from, if it did.
    fn check_as(&self, name: impl Fn(&str) -> String, errors: &mut Vec<String>) {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            errors.push(format!("{}: must be between 0 and 1", name("sampling_ratio")));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(format!("{}: '{e}' must be an http:// or https:// URL", name("endpoint")));
        }
        if self.service_name.trim().is_empty() {
            errors.push(format!("{}: must not be empty", name("service_name")));
        }
        if self.max_queue == 0 {
            errors.push(format!("{}: must be at least 1", name("max_queue")));
        }
    }

    /// The section with the standard `OTEL_*` variables `var` knows laid over it, checked again
    /// (a bad variable is reported by its name): `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`
    /// (`otlp` | `none`), `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`, `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`
    /// (`grpc` | `http/protobuf`), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER_ARG` (the ratio)
    /// and `OTEL_BSP_MAX_QUEUE_SIZE`. The exporter reads the others itself (headers, timeout,
    /// compression, `OTEL_BSP_SCHEDULE_DELAY`...).
    pub fn with_env(mut self, var: impl Fn(&str) -> Option<String>) -> Result<TracingConfig, Vec<String>> {
        let mut errors = Vec::new();
        let var = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut from_env: Vec<(&str, &str)> = Vec::new();
        match var("OTEL_TRACES_EXPORTER").as_deref() {
            None => {}
            Some("otlp") => self.enabled = true,
            Some("none") => self.enabled = false,
            Some(other) => errors.push(format!("OTEL_TRACES_EXPORTER: '{other}' is not supported (otlp or none)")),
        }
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.enabled = false;
        }
        let protocol = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"].into_iter().find_map(|name| var(name).map(|v| (name, v)));
        match protocol.as_ref().map(|(name, v)| (*name, v.as_str())) {
            None => {}
            Some((_, "grpc")) => self.protocol = Protocol::Grpc,
            Some((_, "http/protobuf")) => self.protocol = Protocol::Http,
            Some((name, other)) => errors.push(format!("{name}: '{other}' is not supported (grpc or http/protobuf)")),
        }
        if let Some(e) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.endpoint = Some(e);
            from_env.push(("endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
        } else if let Some(e) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = Some(e);
            from_env.push(("endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"));
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            self.service_name = name;
        }
        if let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
            match arg.parse() {
                Ok(ratio) => self.sampling_ratio = ratio,
                Err(_) => errors.push(format!("OTEL_TRACES_SAMPLER_ARG: '{arg}' is not a number")),
            }
            from_env.push(("sampling_ratio", "OTEL_TRACES_SAMPLER_ARG"));
        }
        if let Some(size) = var("OTEL_BSP_MAX_QUEUE_SIZE") {
            match size.parse() {
                Ok(n) => self.max_queue = n,
                Err(_) => errors.push(format!("OTEL_BSP_MAX_QUEUE_SIZE: '{size}' is not a count")),
            }
            from_env.push(("max_queue", "OTEL_BSP_MAX_QUEUE_SIZE"));
        }
        self.check_as(|field| from_env.iter().find(|(f, _)| *f == field).map_or_else(|| format!("tracing.{field}"), |(_, var)| var.to_string()), &mut errors);
        if errors.is_empty() { Ok(self) } else { Err(errors) }
    }

    /// Where spans are sent: the endpoint as configured for gRPC; for HTTP, its `/v1/traces`.
    pub fn url(&self) -> String {
        match (self.protocol, &self.endpoint) {
            (Protocol::Grpc, Some(e)) => e.clone(),
            (Protocol::Grpc, None) => "http://127.0.0.1:4317".into(),
            (Protocol::Http, e) => {
                let base = e.as_deref().unwrap_or("http://127.0.0.1:4318").trim_end_matches('/');
                if base.ends_with("/v1/traces") { base.into() } else { format!("{base}/v1/traces") }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn every_problem_names_its_field() {
        let bad = TracingConfig { sampling_ratio: 1.5, endpoint: Some("collector:4317".into()), service_name: " ".into(), max_queue: 0, ..Default::default() };
        let mut errors = Vec::new();
        bad.check(&mut errors);
        assert_eq!(
            errors,
            [
                "tracing.sampling_ratio: must be between 0 and 1",
                "tracing.endpoint: 'collector:4317' must be an http:// or https:// URL",
                "tracing.service_name: must not be empty",
                "tracing.max_queue: must be at least 1",
            ]
        );
        let mut errors = Vec::new();
        TracingConfig::default().check(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn otel_variables_override_the_file() {
        let file = TracingConfig { endpoint: Some("http://file:4317".into()), ..Default::default() };
        assert_eq!(file.clone().with_env(env(&[])).unwrap(), file, "no variables: the file as it is");
        let t = file
            .clone()
            .with_env(env(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "router-a"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ]))
            .unwrap();
        assert_eq!(t, TracingConfig { enabled: true, endpoint: Some("http://traces:4318/v1/traces".into()), protocol: Protocol::Http, sampling_ratio: 0.25, service_name: "router-a".into(), max_queue: 64, record_text: false });
        assert_eq!(t.url(), "http://traces:4318/v1/traces");
        let on = TracingConfig { enabled: true, ..file };
        assert!(!on.clone().with_env(env(&[("OTEL_SDK_DISABLED", "true")])).unwrap().enabled);
        assert!(!on.with_env(env(&[("OTEL_TRACES_EXPORTER", "none")])).unwrap().enabled);
    }

    #[test]
    fn bad_variables_are_named() {
        let errors = TracingConfig::default()
            .with_env(env(&[("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), ("OTEL_TRACES_SAMPLER_ARG", "2"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector")]))
            .unwrap_err();
        assert_eq!(
            errors,
            [
                "OTEL_TRACES_EXPORTER: 'zipkin' is not supported (otlp or none)",
                "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not supported (grpc or http/protobuf)",
                "OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1",
                "OTEL_EXPORTER_OTLP_ENDPOINT: 'collector' must be an http:// or https:// URL",
            ]
        );
    }

    #[test]
    fn http_sends_to_v1_traces() {
        let http = |endpoint: Option<&str>| TracingConfig { protocol: Protocol::Http, endpoint: endpoint.map(String::from), ..Default::default() }.url();
        assert_eq!(http(None), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(http(Some("http://c:4318/")), "http://c:4318/v1/traces");
        assert_eq!(http(Some("http://c:4318/v1/traces")), "http://c:4318/v1/traces");
        assert_eq!(TracingConfig::default().url(), "http://127.0.0.1:4317");
    }
}
