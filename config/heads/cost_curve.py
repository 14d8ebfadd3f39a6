#!/usr/bin/env python3
"""The cost/quality curve of cost-aware routing, on held-out questions.

Every prompt is taken to be headed for the large model; the success head's probability that the
small model answers correctly sends it to the small one when it reaches the bar (what
`routing.cost_aware` does). For each bar: the share of prompts still sent to the large model,
the routed system's accuracy (the small model's correctness where it was sent small, the large
one's where sent large), accuracy kept = routed / all-large accuracy, and the expected accuracy
of routing at random with the same share sent large. Also the head's ROC AUC.

    vane eval --data HELD_OUT.jsonl --head HEAD.json --predictions-out PRED.jsonl
    python3 config/heads/cost_curve.py --data HELD_OUT.jsonl --predictions PRED.jsonl [--png curve.png]

Standard library only; the PNG needs matplotlib and is skipped (with a note) without it.
"""

import argparse
import json
import sys
from pathlib import Path

FINE_BARS = [i / 1000 for i in range(1001)]


def load(data_path, predictions_path, success_label):
    """(probability of success, small_ok, large_ok) per held-out question, joined on `row`
    (the 1-based line number `eval` reports)."""
    with open(data_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = []
    with open(predictions_path) as f:
        for line in f:
            p = json.loads(line)
            r = rows[p["row"] - 1]
            if str(r["small_ok"]) != p["label"]:
                sys.exit(f"{predictions_path}: row {p['row']} has label {p['label']} but {data_path} says small_ok={r['small_ok']}: not the same file")
            out.append((p["probabilities"][success_label], r["small_ok"], r["large_ok"]))
    if len(out) != len(rows):
        sys.exit(f"{predictions_path}: {len(out)} predictions for {len(rows)} rows")
    return out


def roc_auc(scores, positives):
    """Probability that a random positive scores above a random negative (ties count half)."""
    ranked = sorted(zip(scores, positives))
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # average 1-based rank of the tie group
        rank_sum += mid_rank * sum(pos for _, pos in ranked[i:j])
        i = j
    n_pos = sum(positives)
    n_neg = len(positives) - n_pos
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def point(rows, bar):
    """Routing at one bar: (share sent large, routed accuracy, random routing's expected accuracy)."""
    n = len(rows)
    small_acc = sum(s for _, s, _ in rows) / n
    large_acc = sum(g for _, _, g in rows) / n
    sent_large = [p < bar for p, _, _ in rows]
    share = sum(sent_large) / n
    routed = sum(g if big else s for (_, s, g), big in zip(rows, sent_large)) / n
    return share, routed, share * large_acc + (1 - share) * small_acc


def cheapest_bar(rows, keep):
    """The bar (on a 0.001 grid) sending the fewest prompts large while keeping `keep` of the
    all-large accuracy; None when none does."""
    large_acc = sum(g for _, _, g in rows) / len(rows)
    keeping = [(point(rows, b)[0], -b) for b in FINE_BARS if point(rows, b)[1] >= keep * large_acc]
    return -min(keeping)[1] if keeping else None


def curve_png(path, rows, bars, large_acc, small_acc):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\n(matplotlib not installed: {path} not written; the table above is the curve)", file=sys.stderr)
        return
    pts = sorted(point(rows, b)[:2] for b in bars)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ax.plot([100 * s for s, _ in pts], [100 * a for _, a in pts], label="success head", color="tab:blue", lw=2)
    ax.plot([0, 100], [100 * small_acc, 100 * large_acc], label="random at the same share", color="tab:gray", ls="--")
    ax.axhline(100 * 0.95 * large_acc, color="tab:red", lw=0.8, ls=":", label="95% of all-large accuracy")
    ax.set_xlabel("prompts sent to the large model (%)")
    ax.set_ylabel("accuracy of the routed system (%)")
    ax.set_title("Cost-aware routing on held-out MMLU-Pro questions")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    print(f"\nplot written to {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the held-out rows (small_ok, large_ok), as given to eval")
    ap.add_argument("--predictions", type=Path, required=True, help="eval --predictions-out of the success head on --data")
    ap.add_argument("--success-label", default="1")
    ap.add_argument("--keep", type=float, default=0.95, help="report the bar keeping at least this share of all-large accuracy")
    ap.add_argument("--png", type=Path, help="also plot the curve here (needs matplotlib)")
    args = ap.parse_args()

    rows = load(args.data, args.predictions, args.success_label)
    n = len(rows)
    small_acc = sum(s for _, s, _ in rows) / n
    large_acc = sum(g for _, _, g in rows) / n
    auc = roc_auc([p for p, _, _ in rows], [s for _, s, _ in rows])
    print(f"{n} held-out questions: small model right on {small_acc:.4f}, large model on {large_acc:.4f}; head ROC AUC {auc:.4f}\n")

    print("| bar | sent to large | routed accuracy | accuracy kept | random routing, same share: accuracy kept |")
    print("|---|---|---|---|---|")
    for bar in [round(0.02 * i, 2) for i in range(15, 41)]:
        share, routed, rand = point(rows, bar)
        print(f"| {bar:.2f} | {100 * share:.1f}% | {routed:.4f} | {100 * routed / large_acc:.1f}% | {100 * rand / large_acc:.1f}% |")

    bar = cheapest_bar(rows, args.keep)
    if bar is None:
        print(f"\nno bar keeps {100 * args.keep:.0f}% of all-large accuracy")
    else:
        share, routed, rand = point(rows, bar)
        print(
            f"\nlowest bar keeping >= {100 * args.keep:.0f}% of all-large accuracy: {bar:.3f}: {100 * share:.1f}% of prompts sent large "
            f"({100 * (1 - share):.1f}% of large calls saved), accuracy {routed:.4f} = {100 * routed / large_acc:.1f}% "
            f"(random routing at that share: {100 * rand / large_acc:.1f}%)"
        )
        need = (args.keep * large_acc - small_acc) / (large_acc - small_acc)
        print(f"random routing needs {100 * need:.1f}% of prompts sent large to keep {100 * args.keep:.0f}%")
        # The bar above is chosen on the rows it is measured on; choosing it on one half and
        # measuring on the other shows how much of that is luck.
        for pick, check in ((rows[0::2], rows[1::2]), (rows[1::2], rows[0::2])):
            b = cheapest_bar(pick, args.keep)
            if b is not None:
                share, routed, _ = point(check, b)
                kept = routed / (sum(g for _, _, g in check) / len(check))
                print(f"bar chosen on one half ({b:.3f}), measured on the other: {100 * share:.1f}% sent large, {100 * kept:.1f}% of all-large accuracy kept")
    if args.png:
        curve_png(args.png, rows, FINE_BARS, large_acc, small_acc)


if __name__ == "__main__":
    main()
