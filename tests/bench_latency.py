"""Whole-request latency through Envoy on loopback, side by side (`make bench`).

Starts the stack (release sidecar, zero-delay mock upstreams) with an extra Envoy listener that
has no Vane filter, then measures sequential requests over one keep-alive connection:
  exact     the same question again: answered by the filter from the exact tier (no encoder pass)
  semantic  a paraphrase of it (other case and punctuation): the encoder runs, the semantic tier answers
  miss   distinct questions (MMLU-Pro, ~100+ tokens), routed and forwarded to a zero-delay upstream
  short  the same questions cut to their first 8 words (~12 tokens): a miss with a short prompt
  plain  the same zero-delay upstream through Envoy without the filter
  1500w, 2000w  every 10th round: MMLU-Pro questions joined into a prompt of 1,500 / 2,000 words
         (within / over the demo's jailbreak budget, `max_windows: 64`): the answers' statuses are counted
The filter + sidecar overhead on a miss is `miss - plain`. Also prints the sidecar's RSS and
the .wasm size. Numbers vary with machine load: compare the rows of one run with each other.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from stack import ROOT, Stack, free_port  # noqa: E402

QUESTIONS = ROOT.parent / "shared" / "data" / "routing" / "mmlu_pro_train.jsonl"
SUMMARY = ROOT / "target" / "bench" / "summary.txt"


def questions(n: int) -> list[str]:
    if QUESTIONS.exists():
        with open(QUESTIONS) as f:
            out = [json.loads(line)["question"] for _, line in zip(range(n), f)]
        if len(out) == n:
            return out
    return [f"Explain, in one paragraph, item {i} of a list of {n} unrelated topics: topic-{i * 7919 % 10007}." for i in range(n)]


def timed(conn: http.client.HTTPConnection, body: dict, headers: dict | None = None) -> tuple[float, str]:
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    # A credential: requests without one are never cached (the filter's anonymous_cache: false).
    conn.request("POST", "/v1/chat/completions", payload,
                 {"content-type": "application/json", "authorization": "Bearer sk-bench", **(headers or {})})
    resp = conn.getresponse()
    resp.read()
    took = (time.perf_counter() - start) * 1000
    if resp.status != 200:  # e.g. a question the jailbreak head blocks: not a sample
        return took, f"status {resp.status}"
    cache = resp.getheader("x-vane-cache", "")
    if cache == "hit" and float(resp.getheader("x-vane-similarity", "1")) < 1.0:
        return took, "semantic hit"
    return took, cache


def long_prompt(qs: list[str], i: int, words: int) -> str:
    """`words` words of the questions from `i` on: distinct for each `i`."""
    out: list[str] = []
    for q in qs[i:] + qs[:i]:
        out += q.split()
        if len(out) >= words:
            break
    return " ".join(out[:words])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, samples: list[float]) -> str:
    if not samples:
        return f"{name:8} n=    0"
    return (f"{name:8} n={len(samples):5}  p50={statistics.median(samples):7.3f} ms  p99={percentile(samples, 0.99):7.3f} ms  "
            f"mean={statistics.fmean(samples):7.3f} ms")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="requests per scenario")
    ap.add_argument("--profile", default="release")
    args = ap.parse_args()

    with Stack(upstream_delay=0, profile=args.profile, plain_port=free_port()) as stack:
        vane = http.client.HTTPConnection("127.0.0.1", stack.envoy_port)
        plain = http.client.HTTPConnection("127.0.0.1", stack.plain_port)
        ask = lambda q: {"model": "auto", "messages": [{"role": "user", "content": q}]}  # noqa: E731
        # Warm up every path, and put the hit question in the cache.
        hit_q = "What is the integral of x squared?"
        paraphrase = "what is the integral of x squared"
        # The question must be cached before its paraphrase is first asked, or the paraphrase
        # would be stored on its own and answered by the exact tier.
        deadline = time.monotonic() + 10
        while timed(vane, ask(hit_q))[1] != "hit":
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up question never became a cache hit")
            time.sleep(0.05)
        for _ in range(50):
            timed(vane, ask(hit_q))
            timed(vane, ask(paraphrase))
            timed(plain, ask(hit_q))
        results: dict[str, list[float]] = {"exact": [], "semantic": [], "miss": [], "short": [], "plain": [], "1500w": [], "2000w": []}
        statuses: dict[str, dict[str, int]] = {"1500w": {}, "2000w": {}}
        qs = questions(args.n)
        for i in range(args.n):  # interleaved, so load changes hit every scenario alike
            took, cache = timed(vane, ask(hit_q))
            if cache == "hit":
                results["exact"].append(took)
            took, cache = timed(vane, ask(paraphrase))
            if cache == "semantic hit":
                results["semantic"].append(took)
            took, cache = timed(vane, ask(qs[i]))
            if cache == "miss":
                results["miss"].append(took)
            took, cache = timed(vane, ask(" ".join(qs[i].split()[:8]) + f" ({i})"))
            if cache == "miss":
                results["short"].append(took)
            results["plain"].append(timed(plain, ask(qs[i]))[0])
            if i % 10 == 0:
                for name, words in (("1500w", 1500), ("2000w", 2000)):
                    took, cache = timed(vane, ask(long_prompt(qs, i, words)))
                    statuses[name][cache] = statuses[name].get(cache, 0) + 1
                    results[name].append(took)  # every answer, refusals included: the time a client waits
        source = QUESTIONS if QUESTIONS.exists() else "synthetic questions (shared/data not found)"
        print(f"# {args.n} requests per scenario, sequential, keep-alive, loopback; sidecar profile {args.profile}")
        print(f"# miss questions: {source}")
        for name, samples in results.items():
            print(summary(name, samples) + (f"  answers: {statuses[name]}" if name in statuses else ""))
        SUMMARY.parent.mkdir(parents=True, exist_ok=True)
        with open(SUMMARY, "w") as f:  # bench_throughput.py appends to it
            for name, samples in results.items():
                if samples:
                    f.write(f"{name}_p50_ms={statistics.median(samples):.3f}\n{name}_p99_ms={percentile(samples, 0.99):.3f}\n")
        base = statistics.median(results["plain"])
        for name in ("miss", "short"):
            print(f"filter+sidecar overhead, {name} (p50 {name} - p50 plain): {statistics.median(results[name]) - base:.3f} ms")
        print(f"sidecar RSS: {rss_mb(stack.sidecar.pid):.1f} MiB; envoy RSS: {rss_mb(stack.envoy.pid):.1f} MiB")
        print(f"wasm size: {os.path.getsize(stack.wasm)} bytes")


if __name__ == "__main__":
    main()
