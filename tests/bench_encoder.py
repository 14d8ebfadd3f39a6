"""Sidecar time per Route for one short prompt, int8 vs fp32, 1 vs 2 encoder threads.

Runs the stack once per variant (release sidecar) with a config that differs from
config/vane.yaml only in `model.onnx` and `model.threads`, sends N repeats of one short
question through Envoy, and reads the sidecar's own histograms from /metrics:
`vane_encoder_duration_seconds` (tokenise + ONNX Runtime) and `vane_route_duration_seconds`.
    .venv/bin/python tests/bench_encoder.py [-n 400]
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from stack import Stack, config_variant  # noqa: E402

VARIANTS = [("minilm-int8.onnx", 1), ("minilm-int8.onnx", 2), ("minilm-fp32.onnx", 1), ("minilm-fp32.onnx", 2)]


def mean_ms(metrics: str, name: str) -> float:
    total = float(re.search(rf"^{name}_sum ([0-9.e-]+)$", metrics, re.M).group(1))
    count = float(re.search(rf"^{name}_count ([0-9.e-]+)$", metrics, re.M).group(1))
    return 1000 * total / count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=400)
    args = ap.parse_args()
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "What is the integral of x squared?"}]}).encode()
    for onnx, threads in VARIANTS:
        with tempfile.TemporaryDirectory(prefix="vane-bench-encoder-") as tmp:
            cfg = config_variant(Path(tmp) / "vane.yaml",
                                 {"model": {"onnx": f"../models/build/{onnx}", "threads": threads}})
            with Stack(upstream_delay=0, profile="release", sidecar_config=cfg) as s:
                conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port)
                for _ in range(args.n):
                    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                    conn.getresponse().read()
                m = urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/metrics").read().decode()
                print(f"{onnx:18} threads={threads}  encoder mean {mean_ms(m, 'vane_encoder_duration_seconds'):6.3f} ms"
                      f"  route mean {mean_ms(m, 'vane_route_duration_seconds'):6.3f} ms")


if __name__ == "__main__":
    main()
