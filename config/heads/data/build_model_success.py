#!/usr/bin/env python3
"""Builds the data for the cost-aware success head: per MMLU-Pro question, did the small model
and did the large model answer it correctly.

Joins mmlu_pro_train.jsonl (question text, MIT) with mmlu_pro_model_correctness.csv (29 models'
0/1 correctness, Apache-2.0) on question_id, and splits by question: 20% of each category is held
out (chosen by a hash of the question_id, so the split is stable across runs and machines) and
written to a separate file that the head never trains on. Standard library only.

    python3 config/heads/data/build_model_success.py [--shared /work/shared/data/routing]
"""

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

# Same family and generation, 8B vs 70B, both instruction-tuned: the pair an operator would
# actually deploy side by side, with a 19-point accuracy gap on these questions and no blanks.
SMALL_MODEL = "Meta-Llama-3_1-8B-Instruct"
LARGE_MODEL = "Meta-Llama-3_1-70B-Instruct"
HOLDOUT = 0.2
HERE = Path(__file__).resolve().parent


def split_key(question_id):
    return hashlib.sha256(f"vane-success-split:{question_id}".encode()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=HERE / "mmlu_pro_train.jsonl")
    ap.add_argument("--correctness", type=Path, default=Path("/work/shared/data/routing/mmlu_pro_model_correctness.csv"))
    ap.add_argument("--out", type=Path, default=HERE / "mmlu_pro_model_success.jsonl")
    ap.add_argument("--holdout-out", type=Path, default=HERE / "mmlu_pro_model_success_holdout.jsonl")
    args = ap.parse_args()

    with args.correctness.open(newline="") as f:
        reader = csv.DictReader(f)
        for model in (SMALL_MODEL, LARGE_MODEL):
            if model not in reader.fieldnames:
                sys.exit(f"{args.correctness}: no column {model}")
        correct = {row["question_id"]: row for row in reader}

    rows, unmatched, blank = [], 0, 0
    with args.questions.open() as f:
        for line in f:
            q = json.loads(line)
            c = correct.get(str(q["question_id"]))
            if c is None:
                unmatched += 1
                continue
            if c["category"] != q["category"]:
                sys.exit(f"question {q['question_id']}: category {q['category']} here, {c['category']} in {args.correctness}")
            small, large = c[SMALL_MODEL], c[LARGE_MODEL]
            if small not in ("0", "1") or large not in ("0", "1"):
                blank += 1  # the model was not scored on this question
                continue
            rows.append({"question_id": q["question_id"], "question": q["question"], "category": q["category"], "small_ok": int(small), "large_ok": int(large)})

    by_category = {}
    for r in rows:
        by_category.setdefault(r["category"], []).append(r)
    held_ids = set()
    for members in by_category.values():
        members.sort(key=lambda r: split_key(r["question_id"]))
        held_ids.update(r["question_id"] for r in members[: round(len(members) * HOLDOUT)])

    train = [r for r in rows if r["question_id"] not in held_ids]
    held = [r for r in rows if r["question_id"] in held_ids]
    for path, part in ((args.out, train), (args.holdout_out, held)):
        with path.open("w") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def rate(part, field):
        return sum(r[field] for r in part) / len(part)

    print(f"{len(rows)} questions joined on question_id ({unmatched} without correctness rows, {blank} with a blank score)", file=sys.stderr)
    for name, part, path in (("train", train, args.out), ("held out", held, args.holdout_out)):
        print(f"{name}: {len(part)} questions -> {path}; {SMALL_MODEL} right on {rate(part, 'small_ok'):.4f}, {LARGE_MODEL} on {rate(part, 'large_ok'):.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
