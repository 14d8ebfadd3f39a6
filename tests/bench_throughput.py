"""Routed misses per second through Envoy against the bare encoder on the same prompts (`make bench`).

1. The bare encoder: `route_bench --encoder-only` embeds distinct short prompts from `--callers`
   concurrent tasks straight into the encoder queue (the configuration's encoders and batching;
   no gRPC, heads, cache or Envoy): the most a routed miss could do on this machine.
2. Routed misses: the stack (release sidecar, zero-delay mock upstream) under wrk with as many
   connections, every request a distinct prompt of the same form, each one a cache miss (looked
   up, encoded, routed, forwarded, stored); the sidecar's own counters confirm how many missed.
The ratio of the two is `encoder_ratio`, written with the rates to target/bench/summary.txt
(one `name=value` per line, appended to what `tests/bench_latency.py` wrote there).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_peers import wrk_run  # noqa: E402
from stack import ROOT, Stack, onnxruntime_library  # noqa: E402

ROUTE_BENCH = ROOT / "target" / "release" / "examples" / "route_bench"
SUMMARY = ROOT / "target" / "bench" / "summary.txt"
# route_bench's prompts (crates/sidecar/examples/route_bench.rs `prompt`), so both sides embed alike.
SUBJECTS = ["the derivative of x^3", "the capital of Peru", "a linked list in Rust", "the causes of the First World War",
            "photosynthesis", "compound interest", "the speed of sound", "a haiku about rain"]


def prompt(i: int) -> str:
    return f"Question {i}: can you explain {SUBJECTS[i % len(SUBJECTS)]} in {2 + i % 5} sentences?"


def bare_encoder(callers: int, seconds: int) -> float:
    out = subprocess.run([str(ROUTE_BENCH), "--encoder-only", "--models", "int8", "--batching", "on",
                          "--callers", str(callers), "--seconds", str(seconds)],
                         capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"ORT_DYLIB_PATH": onnxruntime_library(), "PATH": "/usr/bin:/bin"}).stdout
    row = next(line for line in out.splitlines() if line.startswith("| int8"))
    return float(row.split("|")[6])


def counter(metrics: str, name: str, **labels) -> float:
    """The sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callers", type=int, default=64, help="concurrent callers / wrk connections")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--profile", default="release")
    args = ap.parse_args()

    encoder = bare_encoder(args.callers, args.seconds)
    work = Path(tempfile.mkdtemp(prefix="vane-throughput-"))
    bodies = work / "bodies.jsonl"
    # More distinct prompts than the run can send (wrk wraps at the end: repeats would be hits).
    count = int(encoder * args.seconds * 2) + 10_000
    with open(bodies, "w") as f:
        for i in range(count):
            f.write(json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt(i)}]}) + "\n")
    with Stack(upstream_delay=0, profile=args.profile, log_dir=work / "stack") as stack:
        metrics = lambda: urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/metrics").read().decode()  # noqa: E731
        # Warm up on prompts the measured run never sends (from the end of the file).
        wrk_run(stack.envoy_port, bodies, connections=args.callers, seconds=2, offset=count // 2, repeat=False)
        before = metrics()
        run = wrk_run(stack.envoy_port, bodies, connections=args.callers, seconds=args.seconds, offset=0, repeat=False)
        after = metrics()
    delta = lambda name, **labels: counter(after, name, **labels) - counter(before, name, **labels)  # noqa: E731
    hits = delta("vane_cache_lookups_total", result="hit")
    forwarded = delta("vane_route_decisions_total", decision="forward")
    # Only answered misses count: a refusal (503 when the jailbreak windows miss their deadline
    # under overload, 429/503 from a full queue) is shed load, not a routed miss.
    routed = (run["requests"] - run["failed"]) / args.seconds
    ratio = routed / encoder
    print(f"bare encoder: {encoder:.0f} prompts/s ({args.callers} callers, route_bench --encoder-only)")
    print(f"routed misses through Envoy: {routed:.0f} answered/s (wrk -c{args.callers}: {run['requests']} requests, "
          f"{run['failed']} refused or failed; the sidecar counted {forwarded:.0f} forwarded, {hits:.0f} cache hits)")
    print(f"encoder_ratio={ratio:.3f}")
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    with open(SUMMARY, "a") as f:
        f.write(f"bare_encoder_per_s={encoder:.0f}\nrouted_misses_per_s={routed:.0f}\nrefused_per_s={run['failed'] / args.seconds:.0f}\n"
                f"encoder_ratio={ratio:.3f}\n")


if __name__ == "__main__":
    main()
