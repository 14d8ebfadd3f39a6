"""Measures the sidecar's resident memory before and after a burst of large requests through the
real stack (issue 19, item 4). Not a test: it prints numbers to write down.

    .venv/bin/python tests/measure_memory.py --count 400 --prompt-kb 900 --status 400
    .venv/bin/python tests/measure_memory.py --count 400 --prompt-kb 400           # cached answers

``--status 400``: the upstream answers every request with that error (nothing is cached; before
the fix each ticket kept its prompt for 600 s). Without it the mock echoes the prompt, so each
answer is as large as its prompt and is cached (within cache.max_entry_bytes). Uses the release
sidecar (``--profile``) and the demo configuration (``--config``).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from helpers import Vane  # noqa: E402
from stack import Stack  # noqa: E402


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    wanted = ("vane_cache_entries", "vane_cache_bytes", "vane_tickets_dropped_total", "vane_cache_stores_total")
    out = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in wanted:
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--prompt-kb", type=int, default=900)
    ap.add_argument("--status", type=int, default=None, help="make the upstream answer this error")
    ap.add_argument("--profile", default="release")
    ap.add_argument("--config", type=Path, default=None, help="sidecar config (default: config/vane.yaml)")
    args = ap.parse_args()

    with Stack(profile=args.profile, sidecar_config=args.config, upstream_delay=0,
               filter_config={"timeout_ms": 5000}) as stack:
        v = Vane(stack, api_key="sk-measure")
        pid = stack.sidecar.pid
        time.sleep(1)
        before = rss_mib(pid)
        words = ("river", "mountain", "garden", "window", "letter", "market", "harbour", "lantern")
        started = time.monotonic()
        statuses: dict[int, int] = {}
        for i in range(args.count):
            text = f"Please summarise note {i}: " + " ".join(f"{words[(i + k) % 8]}{k % 97}" for k in range(args.prompt_kb * 1024 // 9))
            headers = {"x-mock-status": str(args.status)} if args.status else None
            # A tenant per request: no prompt is answered from another's entry.
            r = v.chat(text[:args.prompt_kb * 1024], headers=headers, api_key=f"sk-measure-{i}")
            statuses[r.status] = statuses.get(r.status, 0) + 1
        took = time.monotonic() - started
        time.sleep(2)  # releases and stores are sent on the filter's next tick
        after = rss_mib(pid)
        print(f"requests: {args.count} x {args.prompt_kb} KB, statuses {statuses}, {took:.1f} s")
        print(f"sidecar RSS: {before:.0f} MiB before, {after:.0f} MiB after")
        for k, value in sorted(metrics(stack.admin_port).items()):
            print(f"  {k} {value:.0f}")


if __name__ == "__main__":
    main()
