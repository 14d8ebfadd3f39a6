//! The sidecar's gRPC service in process, over an in-memory duplex stream, with the real
//! MiniLM model and ONNX Runtime (run `make models` first; the Makefile sets ORT_DYLIB_PATH,
//! otherwise the library is looked up in the repo's .venv).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Server, Uri};
use vane_model::batching::{BatchPolicy, EmbedQueue};
use vane_model::onnx::OnnxEncoder;
use vane_proto::v1::sidecar_client::SidecarClient;
use vane_sidecar::config::Config;
use vane_sidecar::metrics::Metrics;
use vane_sidecar::pipeline::Pipeline;
use vane_sidecar::server::GrpcService;
use vane_proto::v1::{CacheControl, ReleaseRequest, RouteDecision, RouteRequest, StoreRequest, route_decision::Action};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

fn onnxruntime() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let lib = repo().join(".venv/lib");
    for py in std::fs::read_dir(&lib).expect("no .venv: run `make venv`").flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        if let Some(f) = std::fs::read_dir(&capi).into_iter().flatten().flatten().find(|f| f.file_name().to_string_lossy().starts_with("libonnxruntime.so.")) {
            return f.path();
        }
    }
    panic!("libonnxruntime not found under {}: run `make venv`", lib.display());
}

fn config() -> Config {
    config_with("")
}

/// The test configuration with `extra` YAML appended (top-level sections it does not have).
fn config_with(extra: &str) -> Config {
    let yaml = format!(
        r#"
model: {{ onnx: models/build/minilm-int8.onnx, tokenizer: models/build/tokenizer.json, onnxruntime: "{}" }}
routing:
  default_model: general-model
  example_similarity: 0.3
  categories:
    - {{ name: math, model: math-model, examples: ["Solve the equation 3x + 7 = 22 for x.", "What is the derivative of x^3?", "Compute the integral of sin(x)."] }}
    - {{ name: history, model: general-model, examples: ["Who was the first emperor of Rome?", "What caused the French Revolution?"] }}
cache: {{ threshold: 0.9 }}
{extra}"#,
        onnxruntime().display()
    );
    Config::from_yaml(&yaml, &repo()).expect("test config")
}

async fn client() -> SidecarClient<tonic::transport::Channel> {
    client_with(config()).await
}

async fn client_with(config: Config) -> SidecarClient<tonic::transport::Channel> {
    assert!(config.model.onnx.exists(), "{} is missing: run `make models`", config.model.onnx.display());
    let metrics = Metrics::default();
    let encoder = OnnxEncoder::load(&config.model).expect("loading the encoder");
    let queue = EmbedQueue::start(Box::new(encoder), BatchPolicy::from_config(&config.model), metrics.encoder.clone());
    let pipeline = Arc::new(Pipeline::build(&config, queue, metrics).await.unwrap());
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(Server::builder().add_service(GrpcService::new(pipeline)).serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io))));
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move { io.map(TokioIo::new).ok_or_else(|| std::io::Error::other("one connection only")) }
        }))
        .await
        .unwrap();
    SidecarClient::new(channel)
}

fn ask(prompt: &str) -> RouteRequest {
    RouteRequest { model: "auto".into(), prompt: prompt.into(), context: "{}".into(), tenant: "k:a".into(), ..Default::default() }
}

async fn route(c: &mut SidecarClient<tonic::transport::Channel>, req: RouteRequest) -> Action {
    let d: RouteDecision = c.route(req).await.expect("Route").into_inner();
    d.action.expect("a decision")
}

/// A Store as the filter sends it for a 200 answer: JSON, or a stream.
fn answer(ticket: Vec<u8>, response: impl Into<Vec<u8>>, sse: bool) -> StoreRequest {
    let content_type = if sse { "text/event-stream" } else { "application/json" };
    StoreRequest { ticket, response: response.into(), sse, status: 200, content_type: content_type.into(), cache_control: String::new() }
}

fn completion(text: &str) -> Vec<u8> {
    format!(r#"{{"id":"c","object":"chat.completion","created":1,"model":"math-model","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}]}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_meaning_then_answers_repeats_and_paraphrases_from_the_cache() {
    let mut c = client().await;
    let Action::Forward(f) = route(&mut c, ask("What is the integral of x squared?")).await else { panic!("expected forward") };
    assert_eq!((f.model.as_str(), f.category.as_str()), ("math-model", "math"));
    assert!(!f.ticket.is_empty());
    let Action::Forward(h) = route(&mut c, ask("Who was the first emperor of Rome?")).await else { panic!() };
    assert_eq!((h.model.as_str(), h.category.as_str()), ("general-model", "history"));

    let stored = c.store(answer(f.ticket.clone(), completion("x^3/3 + C"), false)).await.unwrap().into_inner();
    assert!(stored.stored, "{}", stored.reason);

    let Action::Cached(hit) = route(&mut c, ask("What is the integral of x squared?")).await else { panic!("expected a hit") };
    assert!(hit.similarity > 0.999);
    assert!(String::from_utf8_lossy(&hit.completion).contains("x^3/3 + C"));
    let Action::Cached(para) = route(&mut c, ask("what's the integral of x^2?")).await else { panic!("expected a paraphrase hit") };
    assert!(para.similarity >= 0.9 && para.similarity < 0.999);
    assert!(matches!(route(&mut c, ask("How do I bake sourdough bread?")).await, Action::Forward(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_cache_control_are_respected() {
    let mut c = client().await;
    let Action::Forward(f) = route(&mut c, ask("Solve 2x + 4 = 10.")).await else { panic!() };
    assert!(c.store(answer(f.ticket, completion("x = 3"), false)).await.unwrap().into_inner().stored);
    assert!(matches!(route(&mut c, ask("Solve 2x + 4 = 10.")).await, Action::Cached(_)));

    let other_tenant = RouteRequest { tenant: "k:b".into(), ..ask("Solve 2x + 4 = 10.") };
    assert!(matches!(route(&mut c, other_tenant).await, Action::Forward(_)), "tenants never share entries");
    let other_model = RouteRequest { model: "general-model".into(), ..ask("Solve 2x + 4 = 10.") };
    let Action::Forward(kept) = route(&mut c, other_model).await else { panic!("other model partition") };
    assert_eq!(kept.model, "general-model", "a non-alias model is kept");
    let other_context = RouteRequest { context: r#"{"messages":[{"role":"system","content":"answer in French"}]}"#.into(), ..ask("Solve 2x + 4 = 10.") };
    assert!(matches!(route(&mut c, other_context).await, Action::Forward(_)), "different conversation, no hit");

    let no_cache = RouteRequest { cache_control: CacheControl::NoCache as i32, ..ask("Solve 2x + 4 = 10.") };
    let Action::Forward(nc) = route(&mut c, no_cache).await else { panic!("no-cache skips the lookup") };
    assert!(!nc.ticket.is_empty(), "no-cache still stores");
    let no_store = RouteRequest { cache_control: CacheControl::NoStore as i32, ..ask("Solve 2x + 4 = 10.") };
    let Action::Forward(ns) = route(&mut c, no_store).await else { panic!() };
    assert!(ns.ticket.is_empty(), "no-store neither reads nor writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_complete_answers_are_stored() {
    let mut c = client().await;
    let Action::Forward(f) = route(&mut c, ask("What is the capital of Australia?")).await else { panic!() };
    let truncated = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Canb\"}}]}\n\n".to_vec();
    let r = c.store(answer(f.ticket, truncated, true)).await.unwrap().into_inner();
    assert_eq!((r.stored, r.reason.as_str()), (false, "truncated_stream"));
    assert!(matches!(route(&mut c, ask("What is the capital of Australia?")).await, Action::Forward(_)));

    let Action::Forward(f) = route(&mut c, ask("What is the capital of Australia?")).await else { panic!() };
    let stream = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"general-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Canb\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"general-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"erra\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n"
    );
    assert!(c.store(answer(f.ticket, stream, true)).await.unwrap().into_inner().stored);
    let Action::Cached(hit) = route(&mut c, ask("What is the capital of Australia?")).await else { panic!() };
    let v: serde_json::Value = serde_json::from_slice(&hit.completion).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Canberra");
    assert_eq!(v["object"], "chat.completion");
}

/// Answers `prompt` from the upstream (a Forward, stored), then returns what `next` gets.
async fn after_storing(c: &mut SidecarClient<tonic::transport::Channel>, prompt: &str, next: &str) -> (Action, Action) {
    let first = route(c, ask(prompt)).await;
    let Action::Forward(f) = &first else { panic!("expected a forward for {prompt}") };
    assert!(c.store(answer(f.ticket.clone(), completion("answer"), false)).await.unwrap().into_inner().stored);
    (first, route(c, ask(next)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_the_encoder_cannot_read_are_never_semantic_hits_but_repeat_exactly() {
    let mut c = client().await;
    // The same question reworded (the guard lets it pass): MiniLM reads most of it as [UNK], so
    // its similarity means nothing and it must not be served.
    let (first, reworded) = after_storing(&mut c, "秦朝是哪一年建立的？", "秦朝哪年建立？").await;
    let Action::Forward(f) = first else { unreachable!() };
    assert_eq!((f.model.as_str(), f.category.as_str()), ("general-model", "default"), "unreadable: the default model");
    assert!(matches!(reworded, Action::Forward(_)), "semantic hit on an unreadable prompt: {reworded:?}");
    let Action::Cached(exact) = route(&mut c, ask("秦朝是哪一年建立的？")).await else { panic!("an identical repeat is an exact hit") };
    assert_eq!(exact.similarity, 1.0);
    // Emoji are unknown to the vocabulary too.
    let (_, emoji) = after_storing(&mut c, "🐱🐱🐱", "🐱🐱").await;
    assert!(matches!(emoji, Action::Forward(_)), "{emoji:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_past_the_encoder_window_is_matched_exactly_only() {
    let mut c = client().await;
    let doc: String = (0..360).map(|i| format!("word{} ", i % 7)).collect::<String>().replace("word", "the report says ");
    let (a, b) = (format!("{doc}\nSummarise it in one sentence."), format!("{doc}\nTranslate it into French."));
    let (_, other) = after_storing(&mut c, &a, &b).await;
    assert!(matches!(other, Action::Forward(_)), "the ends differ past the window: {other:?}");
    assert!(matches!(route(&mut c, ask(&a)).await, Action::Cached(_)), "identical: exact hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_prompt_goes_to_the_default_model_uncached() {
    let mut c = client().await;
    let Action::Forward(f) = route(&mut c, ask("")).await else { panic!() };
    assert_eq!(f.model, "general-model");
    assert!(f.ticket.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_stores_over_their_caps_are_refused() {
    let mut c = client_with(config_with("server: { max_route_bytes: 64KiB, max_store_bytes: 16KiB }\n")).await;
    let big = |n: usize| "lorem ipsum dolor sit amet ".repeat(n / 27 + 1);
    // Over max_route_bytes, by the prompt or by prompt + context: our own OUT_OF_RANGE.
    for req in [ask(&big(70_000)), RouteRequest { context: big(40_000), ..ask(&big(30_000)) }] {
        let e = c.route(req).await.expect_err("over the cap");
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("server.max_route_bytes"), "{}", e.message());
    }
    // Far over it, beyond the decoding limit: tonic's OUT_OF_RANGE, before the message is decoded.
    let e = c.route(ask(&big(200_000))).await.expect_err("over the decoding limit");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{}", e.message());

    // Under the cap: routed, with a ticket carrying the 20 KB prompt. An answer over
    // max_store_bytes is not stored; one under it is, the ticket making the Store larger than
    // max_store_bytes (the decoding limit leaves room for it).
    let Action::Forward(f) = route(&mut c, ask(&format!("What is the capital of France? {}", big(20_000)))).await else { panic!("under the cap") };
    assert!(f.ticket.len() > 20_000);
    let r = c.store(answer(f.ticket.clone(), completion(&"x".repeat(17_000)), false)).await.unwrap().into_inner();
    assert_eq!((r.stored, r.reason.as_str()), (false, "too_large"));
    let r = c.store(answer(f.ticket, completion(&format!("Paris {}", "x".repeat(15_000))), false)).await.unwrap().into_inner();
    assert_eq!((r.stored, r.reason.as_str()), (true, ""));
    // Control: a small answer is stored.
    let Action::Forward(f) = route(&mut c, ask("What is the capital of Italy?")).await else { panic!() };
    assert!(c.store(answer(f.ticket, completion("Rome"), false)).await.unwrap().into_inner().stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_releases_filter_is_answered() {
    // Filters of 0.1 send Release, and Store with tickets of the old kind (`n-tag`).
    let mut c = client().await;
    let Action::Forward(f) = route(&mut c, ask("What is the capital of Spain?")).await else { panic!() };
    assert!(!c.release(ReleaseRequest { ticket: f.ticket.clone() }).await.unwrap().into_inner().released, "nothing to free");
    let r = c.store(answer(b"1f-0123456789abcdef".to_vec(), completion("Madrid"), false)).await.unwrap().into_inner();
    assert_eq!((r.stored, r.reason.as_str()), (false, "invalid_ticket"));
    assert!(matches!(route(&mut c, ask("What is the capital of Spain?")).await, Action::Forward(_)), "nothing was cached");
    // Nor does a Store without the answer's status (a filter that predates it) store anything.
    let Action::Forward(f) = route(&mut c, ask("What is the capital of Spain?")).await else { panic!() };
    let r = c.store(StoreRequest { ticket: f.ticket, response: completion("Madrid"), sse: false, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((r.stored, r.reason.as_str()), (false, "status"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_fails_loudly() {
    let mut c = config();
    c.model.device = vane_model::config::Device::Cuda;
    let err = OnnxEncoder::load(&c.model).err().expect("must not fall back to the CPU").to_string();
    assert!(err.contains("built without the `cuda` feature"), "{err}");
}
