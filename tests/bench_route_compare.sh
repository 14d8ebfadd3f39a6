#!/bin/bash
# Route p50 side by side, interleaved rounds of route_bench (1 caller, int8), so that a noisy
# machine weighs on both sides alike: `make bench-compare` (ROUNDS, BENCH_SECONDS).
#   minilm         config/vane.yaml
#   e5             config/vane-multilingual.yaml (the multilingual encoder)
#   minilm-traced  config/vane.yaml with every trace exported (sampling 1.0) to a local OTLP receiver
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-8} SECONDS_PER_RUN=${BENCH_SECONDS:-8}
BENCH=target/release/examples/route_bench
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)}
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid .venv/bin/python tests/otlp_receiver.py --port "$PORT" > target/bench-otlp.log 2>&1 &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null || true' EXIT
sleep 2
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$PORT
for round in $(seq 1 "$ROUNDS"); do
  for run in "minilm config/vane.yaml" "e5 config/vane-multilingual.yaml" "minilm-traced config/vane.yaml --tracing"; do
    set -- $run
    name=$1 config=$2
    shift 2
    row=$($BENCH --config "$config" --models int8 --callers 1 --seconds "$SECONDS_PER_RUN" "$@" 2>"target/bench-$name.log" | grep '^| int8' | head -1)
    echo "$round $name $(echo "$row" | cut -d'|' -f5 | tr -d ' ')"
  done
done | .venv/bin/python -c '
import statistics, sys
p50 = {}
for line in sys.stdin:
    _, name, value = line.split()
    p50.setdefault(name, []).append(float(value))
    print(line.strip(), flush=True)
m = {k: statistics.median(v) for k, v in p50.items()}
base, e5, traced = m["minilm"], m["e5"], m["minilm-traced"]
print(f"median Route p50 ms: minilm {base:.3f}, e5 {e5:.3f} ({e5 / base:.2f}x), minilm traced {traced:.3f} ({traced - base:+.3f} ms)")
'
grep -h "spans dropped" target/bench-minilm-traced.log | tail -1
