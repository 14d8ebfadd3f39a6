"""Builds config/cache_eval/traps.jsonl: near-duplicate traps (pairs that embed alike but ask
something else) mixed with true paraphrases, for `vane eval-cache`.

Two sources, both redistributable:
- traps_handwritten.tsv (this folder): chat-style questions, written for Vane.
- the GPTCache mock paraphrase pairs (zilliztech/GPTCache, MIT): each `origin` is kept with its
  `similar` paraphrase as a duplicate, and edited once into a trap: a negation inserted, a number
  changed, or one capitalised name swapped for another row's. (Edits use their own word lists, not
  the guard's, so the guard is not simply marking its own homework.)

Deterministic: `python3 config/cache_eval/make_traps.py [--gptcache FILE]`.
"""

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_GPTCACHE = "/work/shared/data/paraphrase/gptcache_mock_paraphrase_pairs.jsonl"


def handwritten():
    for line in (HERE / "traps_handwritten.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, q1, q2 = line.split("\t")
        yield {"q1": q1, "q2": q2, "is_duplicate": int(kind == "paraphrase"), "kind": kind, "source": "handwritten"}


AUX = re.compile(r"\b(is|are|was|were|can|will|should|does|do)\b ")
NUMBER = re.compile(r"\b\d+\b")
# A capitalised word not at the start of the text: a name, in these documentation sentences.
NAME = re.compile(r"(?<=[a-z,] )([A-Z][A-Za-z]{3,})\b")


def negate(text):
    m = AUX.search(text)
    if not m or re.search(r"\bnot\b|n't\b|\bno\b", text):
        return None
    return text[: m.end()] + "not " + text[m.end():]


def renumber(text):
    m = NUMBER.search(text)
    if not m:
        return None
    n = int(m.group())
    return text[: m.start()] + str(n * 2 + 1) + text[m.end():]


def swap_name(text, names, rng):
    found = [n for n in NAME.findall(text)]
    if not found:
        return None
    old = found[0]
    choices = [n for n in names if n.lower() != old.lower() and n.lower() not in text.lower()]
    if not choices:
        return None
    return re.sub(rf"\b{re.escape(old)}\b", rng.choice(choices), text)


def from_gptcache(path, per_kind):
    rows = [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
    # Short single-line rows only: a cache key is a question, not a page of code.
    rows = [r for r in rows if len(r["origin"]) <= 200 and "\n" not in r["origin"]]
    rng = random.Random(7)
    rng.shuffle(rows)
    names = sorted({n for r in rows for n in NAME.findall(r["origin"])})
    edits = {"negation": negate, "numbers": renumber, "entity": lambda t: swap_name(t, names, rng)}
    made = {k: 0 for k in edits}
    for r in rows:
        for kind, edit in edits.items():
            if made[kind] >= per_kind:
                continue
            trap = edit(r["origin"])
            if trap and trap != r["origin"]:
                made[kind] += 1
                yield {"q1": r["origin"], "q2": trap, "is_duplicate": 0, "kind": kind, "source": "gptcache"}
                yield {"q1": r["origin"], "q2": r["similar"], "is_duplicate": 1, "kind": "paraphrase", "source": "gptcache"}
                break


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gptcache", default=DEFAULT_GPTCACHE)
    ap.add_argument("--per-kind", type=int, default=40)
    ap.add_argument("--out", default=str(HERE / "traps.jsonl"))
    args = ap.parse_args()
    rows = list(handwritten()) + list(from_gptcache(args.gptcache, args.per_kind))
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    kinds = {}
    for r in rows:
        kinds[(r["source"], r["kind"])] = kinds.get((r["source"], r["kind"]), 0) + 1
    print(f"{args.out}: {len(rows)} pairs", dict(sorted(kinds.items())))


if __name__ == "__main__":
    main()
