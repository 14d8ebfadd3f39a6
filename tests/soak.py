#!/usr/bin/env python3
"""The soak (`make soak`, not part of `make test`): mixed traffic through the real stack for a
long time, watching memory and the state that must stay bounded.

    python tests/soak.py [--seconds 1800] [--clients 8] [--profile release]

Starts the stack (tests/stack.py: mock models, the sidecar with the embedded cache, Envoy) and
runs tests/load.py's clients with the soak mix: hits, misses, streams, long prompts, plus an
invalidation of one client's entries every --invalidate-every seconds (that client's hits must
then be answers stored after it). Every --sample seconds it records the RSS (VmRSS) of Envoy and
of the sidecar and the gauges of what must stay bounded: the filter's held tickets and queued
Stores (Envoy's /stats/prometheus), the sidecar's conversations and cache entries/bytes (its
/metrics). The cache and the conversation memory get small bounds here (--max-entries,
--max-conversations) so that a run of minutes reaches them, and the latency budgets of
tests/load.py's UNDER_LOAD (the box is saturated on purpose: shedding is not what is measured).

At the end it prints the totals, each gauge's maximum against its bound, and the RSS slope of
each process in MiB/hour (least squares over all the samples, over those after the first fifth,
and over the second half, once the cache and the allocators have filled). Samples go to
target/soak/samples.csv. Exit status 1 when a request failed, a hit was stale or a gauge passed
its bound; the slope is reported, not judged.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))  # helpers.py
from load import FILTER_UNDER_LOAD, MIX_SOAK, UNDER_LOAD, Load  # noqa: E402
from stack import ROOT, Stack, config_variant  # noqa: E402

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def gauge(text: str, name: str) -> float:
    """The sum of ``name``'s samples (label sets summed)."""
    return sum(float(m[1]) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes), in MiB per hour."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return float("nan")
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 3600 / MIB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pause", type=float, default=0.02, help="seconds each client waits between requests")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--invalidate-every", type=float, default=20.0)
    ap.add_argument("--max-entries", type=int, default=2000)
    ap.add_argument("--max-conversations", type=int, default=2000)
    ap.add_argument("--profile", default="release")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "soak")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    config = config_variant(args.out / "vane.yaml", UNDER_LOAD, {"cache": {"max_entries": args.max_entries},
                            "routing": {"multi_turn": {"max_conversations": args.max_conversations}}})
    bounds = {"tickets_held": args.clients, "pending_stores": 1024,  # the filter's max_pending_stores
              "conversations": args.max_conversations, "cache_entries": args.max_entries}
    samples: list[dict] = []
    totals = {"sent": 0, "failed": 0, "stale": 0, "fell_back": 0, "hits": 0, "invalidations": 0}
    problems: list[str] = []

    with Stack(sidecar_config=config, upstream_delay=0, profile=args.profile, log_dir=args.out / "stack",
               filter_config=FILTER_UNDER_LOAD) as stack:
        load = Load(stack, threads=args.clients, mix=MIX_SOAK, name="soak", pause=args.pause)
        load.warm_up()
        started = time.monotonic()
        next_sample, next_invalidation = started, started + args.invalidate_every
        victim = 0

        def tally(results):
            for r in results:
                totals["sent"] += 1
                totals["hits"] += r.cache == "hit"
                totals["fell_back"] += r.fallback is not None
                if r.stale:
                    totals["stale"] += 1
                elif not r.ok:
                    totals["failed"] += 1
                if not r.ok and len(problems) < 10:
                    problems.append(f"{r.kind} {r.status} {r.problem}")

        print(f"soak: {args.seconds:.0f} s, {args.clients} clients, sidecar {stack.embedder_bin} (logs {stack.dir})", flush=True)
        with load:
            while (now := time.monotonic()) < started + args.seconds:
                if now >= next_invalidation:
                    load.request_invalidate(victim % args.clients)
                    victim += 1
                    next_invalidation += args.invalidate_every
                if now >= next_sample:
                    next_sample += args.sample
                    tally(load.drain())
                    envoy = scrape(f"http://127.0.0.1:{stack.envoy_admin_port}/stats/prometheus")
                    sidecar = scrape(f"http://127.0.0.1:{stack.admin_port}/metrics")
                    samples.append({
                        "t": round(now - started, 1),
                        "envoy_rss": rss_bytes(stack.envoy.pid), "sidecar_rss": rss_bytes(stack.sidecar.pid),
                        "tickets_held": gauge(envoy, "vane_filter_tickets_held"),
                        "pending_stores": gauge(envoy, "vane_filter_pending_stores"),
                        "stores_dropped": gauge(envoy, "vane_filter_stores_dropped_total"),
                        "conversations": gauge(sidecar, "vane_conversations"),
                        "cache_entries": gauge(sidecar, "vane_cache_entries"),
                        "cache_bytes": gauge(sidecar, "vane_cache_bytes"),
                        "sent": totals["sent"],
                    })
                    s = samples[-1]
                    if len(samples) % max(1, round(60 / args.sample)) == 1:
                        print(f"  t={s['t']:>6.0f}s sent={s['sent']} envoy={s['envoy_rss'] / MIB:.1f}MiB "
                              f"sidecar={s['sidecar_rss'] / MIB:.1f}MiB tickets={s['tickets_held']:.0f} "
                              f"pending={s['pending_stores']:.0f} conversations={s['conversations']:.0f} "
                              f"entries={s['cache_entries']:.0f}", flush=True)
                    for upstream in stack.models:  # the mock's request log would grow for ever
                        urllib.request.urlopen(urllib.request.Request(
                            stack.upstream_url(upstream, "/mock/reset"), data=b"{}", method="POST"), timeout=10).read()
                time.sleep(0.2)
        tally(load.drain())
        totals["invalidations"] = sum(c.invalidations for c in load.clients)

    with open(args.out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0]))
        w.writeheader()
        w.writerows(samples)

    elapsed = samples[-1]["t"] if samples else 0
    print(f"\nsoak: {elapsed:.0f} s, {totals['sent']} requests ({totals['sent'] / max(elapsed, 1):.0f}/s), "
          f"{totals['hits']} hits, {totals['fell_back']} fell back, {totals['invalidations']} invalidations, "
          f"{totals['failed']} failed, {totals['stale']} stale")
    for p in problems:
        print(f"  problem: {p}")
    # The caches and the allocator fill for minutes; the second half is what a leak would show in.
    windows = {"over the run": 0, "after the first fifth": elapsed / 5, "over the second half": elapsed / 2}
    for proc in ("envoy", "sidecar"):
        key = f"{proc}_rss"
        first, last, peak = samples[0][key] / MIB, samples[-1][key] / MIB, max(s[key] for s in samples) / MIB
        slopes = ", ".join(f"{slope_per_hour([(s['t'], s[key]) for s in samples if s['t'] >= start]):+.1f} MiB/h {name}"
                           for name, start in windows.items())
        print(f"  {proc:<8} RSS {first:.1f} -> {last:.1f} MiB (max {peak:.1f}); slope {slopes}")
    over = []
    for name, bound in bounds.items():
        peak = max(s[name] for s in samples)
        print(f"  {name:<15} max {peak:.0f} (bound {bound}), last {samples[-1][name]:.0f}")
        if peak > bound:
            over.append(name)
    print(f"  stores_dropped  {samples[-1]['stores_dropped']:.0f}; cache_bytes last {samples[-1]['cache_bytes'] / MIB:.1f} MiB")
    print(f"  samples: {args.out / 'samples.csv'}")
    bad = totals["failed"] or totals["stale"] or over
    if bad:
        print(f"soak FAILED: {totals['failed']} failed, {totals['stale']} stale, over bound: {over}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
