"""Dynamic int8 quantisation of the encoder graph, and the self-check of what was exported.

``find_outlier_channels`` calibrates which activation channels stay in fp32, ``quantize`` runs
onnxruntime's ``quantize_dynamic`` on the quantiser-input graph (models/graph.py), and
``self_check`` compares fp32, quantiser-input and int8 on fixed token ids with onnxruntime.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from graph import OUTLIER_SUFFIX

# Activation outliers (find_outlier_channels): a channel whose peak exceeds OUTLIER_RATIO x the
# median channel's peak is kept out of the quantised MatMul.
OUTLIER_RATIO = 6.0
MAX_OUTLIERS = 8

# Self-check thresholds (the real validation against sentence-transformers is check_export.py).
MIN_INT8_COSINE = 0.99  # each sentence embedded on its own
MIN_INT8_COSINE_BATCHED = 0.985  # inside a padded batch of mixed lengths (see self_check)
NORM_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------
# Quantisation
# --------------------------------------------------------------------------------------------


def find_outlier_channels(fp32: onnx.ModelProto, linear_inputs: dict[str, str],
                          batch: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Input channels of each linear layer whose activations dwarf the others.

    Like most BERTs, MiniLM has a handful of fixed hidden dimensions (channel 99 and 223 of the
    residual stream, one GELU neuron per early FFN) that reach 15-30 while the typical channel
    stays below ~1.5, mostly on [CLS]/[SEP]. Dynamic quantisation uses one uint8 range per
    activation tensor, so such a channel sets the step for all of them: measured here, that alone
    pulls short inputs ("hi", "thanks") down to cosine ~0.95 against fp32, while quantising the
    weights only (per-channel) costs less than 0.005. The fix is the LLM.int8() decomposition:
    route these few channels through a small fp32 MatMul (GraphBuilder.linear).

    A channel is an outlier when its max |activation| over the calibration batch exceeds
    OUTLIER_RATIO times the median channel's max. The channels are a property of the weights
    (they are the same whatever the text), so a small fixed batch finds them reliably.
    """
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(fp32)
    names = sorted(set(linear_inputs.values()))
    for n in names:
        probe.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, batch)))
    real = batch["attention_mask"].astype(bool)  # padding rows are excluded from the statistics

    outliers = {}
    for linear, x in linear_inputs.items():
        peak = np.abs(values[x][real]).max(axis=0)  # [channels]
        idx = np.flatnonzero(peak > OUTLIER_RATIO * np.median(peak))
        if len(idx) > MAX_OUTLIERS:  # not a few outliers but a broad distribution: leave it alone
            idx = np.argsort(peak)[::-1][:MAX_OUTLIERS]
        if len(idx):
            outliers[linear] = sorted(int(i) for i in idx)
    return outliers


def quantize(qsrc_path: Path, int8_path: Path) -> None:
    """Dynamic int8: weights quantised offline, activations per tensor at run time (uint8).

    - per_channel=True gives every output column of a MatMul weight its own scale; with a single
      scale per tensor, short inputs fall to cosine ~0.77 against fp32.
    - reduce_range=True stores the weights in 7 bits. On x86 CPUs without VNNI (plain AVX2) ORT's
      u8 x s8 kernel adds pairs of products in int16 (vpmaddubsw), which saturates when full-range
      activations meet full-range weights. Once the outlier split spreads the activations over the
      whole uint8 range this is the dominant error (short inputs ~0.95 with 8-bit weights, ~0.993
      with 7-bit ones, measured on an AVX2 EPYC); it costs nothing measurable elsewhere.
    - The word-embedding Gather is quantised too, which is what brings the file from ~90 MB to
      ~24 MB. The small fp32 outlier MatMuls are excluded.

    No quant_pre_process: its symbolic shape inference needs sympy (not a dependency here), and
    without it the pre-processed graph quantised to the very same numbers.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a generic "consider pre-processing" hint on every call; see above.
    logging.getLogger().addFilter(lambda record: "pre-processing" not in record.getMessage())

    model = onnx.load(str(qsrc_path))
    keep_fp32 = [n.name for n in model.graph.node if n.name.endswith(OUTLIER_SUFFIX)]
    quantize_dynamic(
        str(qsrc_path),
        str(int8_path),
        per_channel=True,
        weight_type=QuantType.QInt8,
        reduce_range=True,
        nodes_to_exclude=keep_fp32,
        # MatMulConstBOnly (the quantize_dynamic default, spelled out): only MatMuls with a constant
        # weight are quantised; attention scores / context (activation x activation) stay fp32.
        extra_options={"MatMulConstBOnly": True},
    )


def manifest_entry(outliers: dict[str, list[int]]) -> dict:
    """How quantize() quantised, for an export's manifest.json."""
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": True,
        "padding_rows_zeroed": True,
        # linear layer -> input channels computed in fp32 beside the quantised MatMul
        "fp32_outlier_channels": {k: ",".join(map(str, v)) for k, v in outliers.items()},
    }


# --------------------------------------------------------------------------------------------
# Self-check (onnxruntime only)
# --------------------------------------------------------------------------------------------

# Sentences written as whole-word vocabulary entries, so that their ids can be looked up in
# tokenizer.json without a tokenizer library (the project venv has no `tokenizers`).
SELF_CHECK_SENTENCES = [
    "how do i reset my password",
    "i forgot my password and cannot log in",
    "the weather is sunny and warm today",
    "write a python function that sorts a list of numbers",
    "what is the capital of france",
    "hello",
    "thanks",
]

# Token ids for find_outlier_channels; deliberately not the self-check sentences.
CALIBRATION_SENTENCES = [
    "hi",
    "can you explain how a neural network learns from data",
    "book a table for two at an italian restaurant tonight",
    "the stock market fell sharply after the announcement",
    "please translate this paragraph into spanish",
    "my order has not arrived yet and i would like my money back",
    "list three facts about the moon",
    "ok",
]


def encode_words(vocab: dict[str, int], sentence: str) -> list[int]:
    ids = [vocab["[CLS]"]]
    for word in sentence.split():
        if word not in vocab:
            raise KeyError(f"word {word!r} is not a whole vocabulary entry")
        ids.append(vocab[word])
    return ids + [vocab["[SEP]"]]


def pad_batch(seqs: list[list[int]]) -> dict[str, np.ndarray]:
    longest = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), longest), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def self_check(fp32_path: Path, split_path: Path, int8_path: Path, encode: Callable[[str], list[int]],
               margin: float = 0.2) -> dict:
    """fp32, quantiser-input and int8 on SELF_CHECK_SENTENCES; ``encode`` turns one into token ids,
    ``margin`` is how far related sentences must be above unrelated ones (an encoder's own scale)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = {
        name: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for name, path in (("fp32", fp32_path), ("split", split_path), ("int8", int8_path))
    }

    def embed(name: str, batch: dict[str, np.ndarray]) -> np.ndarray:
        return sessions[name].run(["sentence_embedding"], batch)[0]

    seqs = [encode(s) for s in SELF_CHECK_SENTENCES]
    batch = pad_batch(seqs)  # mixed lengths: exercises the padding mask
    out = {name: embed(name, batch) for name in sessions}
    single = {name: np.concatenate([embed(name, pad_batch([s])) for s in seqs]) for name in ("fp32", "int8")}

    failures = []
    for name, emb in out.items():
        if emb.shape != (len(seqs), 384) or emb.dtype != np.float32:
            failures.append(f"{name}: unexpected output {emb.shape} {emb.dtype}")
        norms = np.linalg.norm(emb, axis=1)
        if np.max(np.abs(norms - 1.0)) > NORM_TOLERANCE:
            failures.append(f"{name}: embedding norms {norms} are not 1")

    # fp32: padding must not change an embedding (each sentence alone vs inside the padded batch).
    pad_cos = cosine_rows(single["fp32"], out["fp32"])
    if pad_cos.min() < 0.99999:
        failures.append(f"fp32: padded vs unpadded cosine {pad_cos.min():.6f}")

    split_cos = cosine_rows(out["split"], out["fp32"])
    if split_cos.min() < 0.99999:
        failures.append(f"quantiser-input graph differs from fp32: cosine {split_cos.min():.6f}")

    # int8 vs fp32, each sentence on its own and inside the padded batch. Dynamic quantisation
    # takes one activation range per tensor, i.e. per batch, so an int8 embedding depends slightly
    # on its batch-mates; one-word inputs next to longer ones are the worst case.
    int8_cos = cosine_rows(single["int8"], single["fp32"])
    int8_batch_cos = cosine_rows(out["int8"], out["fp32"])
    if int8_cos.min() < MIN_INT8_COSINE:
        failures.append(f"int8 vs fp32 cosine {int8_cos.min():.4f} < {MIN_INT8_COSINE}")
    if int8_batch_cos.min() < MIN_INT8_COSINE_BATCHED:
        failures.append(f"int8 vs fp32 cosine in a padded batch {int8_batch_cos.min():.4f} < {MIN_INT8_COSINE_BATCHED}")

    # A coarse semantic sanity check that a wrong weight layout would fail: the two password
    # questions are closer to each other than to the weather sentence.
    e = out["fp32"]
    related, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    if not related > unrelated + margin:
        failures.append(f"fp32: related {related:.3f} not clearly above unrelated {unrelated:.3f}")

    print("self-check (fixed token ids, onnxruntime, 1 thread):")
    print("  int8~fp32 alone / in batch   fp32 padded~alone")
    for i, s in enumerate(SELF_CHECK_SENTENCES):
        print(f"  {int8_cos[i]:.5f} / {int8_batch_cos[i]:.5f}       {pad_cos[i]:.7f}   {s!r}")
    print(f"  quantiser-input graph vs fp32: min cos={split_cos.min():.7f}")
    print(f"  similarity: related={related:.3f} unrelated={unrelated:.3f}")
    if failures:
        for f in failures:
            print(f"  FAIL {f}", file=sys.stderr)
        sys.exit("error: self-check failed")
    return {
        "sentences": len(seqs),
        "int8_vs_fp32_cosine_min": round(float(int8_cos.min()), 5),
        "int8_vs_fp32_cosine_mean": round(float(int8_cos.mean()), 5),
        "int8_vs_fp32_cosine_min_in_padded_batch": round(float(int8_batch_cos.min()), 5),
        "fp32_padded_vs_alone_cosine_min": round(float(pad_cos.min()), 6),
    }
