"""Vane beside the gateways users pick instead, on one machine, in one run (`make bench-peers`).

Four systems in front of the same zero-delay mock upstream (tests/mock_upstream.py):
  envoy     Envoy without the filter (the stack's plain listener): the baseline of every ratio
  vane      Envoy with the Vane filter and the release sidecar (config/vane.yaml)
  litellm   LiteLLM proxy 1.76.3 with its local (in-memory) cache
  gptcache  GPTCache 0.1.44's server (its OpenAI proxy), embedding with Vane's MiniLM ONNX model
            (tests/peers/gptcache_proxy.py)
Two scenarios: `hit` asks one question again and again (answered from each cache; for envoy, a
pass-through), `miss` asks distinct MMLU-Pro questions (each one new to the cache: looked up,
forwarded, stored). Sequential latency is measured over one keep-alive connection per system,
interleaved request by request so machine noise weighs on all alike; throughput with wrk at 16
and 64 connections, the systems taking turns; RSS is each system's own processes at the end
(Envoy serves both of its listeners from one process, so its filter VM is in envoy's row).
Everything shares the machine's cores with the load generator: compare rows of one run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency import QUESTIONS, percentile, rss_mb  # noqa: E402
from stack import ROOT, Stack, free_port, http_ok, stop_process, wait_until  # noqa: E402

PEERS = ROOT / ".venv-peers"
WRK_SCRIPT = ROOT / "tests" / "peers" / "wrk_chat.lua"
MODEL = "general-model"
HIT_QUESTION = "What is the integral of x squared?"
SYSTEMS = ("envoy", "vane", "litellm", "gptcache")


def body(question: str) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}]}


def mmlu_questions() -> list[str]:
    if not QUESTIONS.exists():
        raise SystemExit(f"{QUESTIONS} is missing: the miss scenario asks its MMLU-Pro questions")
    with open(QUESTIONS) as f:
        return list(dict.fromkeys(json.loads(line)["question"] for line in f))


class Peer:
    """One system under test: where to send requests, its processes, how it marks a cache hit."""

    def __init__(self, name: str, port: int, procs: list[subprocess.Popen | int]):
        self.name, self.port, self.procs = name, port, procs
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.ids: set[str] = set()

    def ask(self, question: str) -> tuple[float, bool | None]:
        """(milliseconds, served from the cache); None instead of a bool for a non-200 answer."""
        payload = json.dumps(body(question)).encode()
        start = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", payload,
                          {"content-type": "application/json", "authorization": "Bearer sk-bench"})
        resp = self.conn.getresponse()
        data = resp.read()
        took = (time.perf_counter() - start) * 1000
        if resp.status != 200:
            print(f"# {self.name}: status {resp.status}: {data[:200]!r}", flush=True)
            return took, None
        if self.name == "vane":
            hit = resp.getheader("x-vane-cache") == "hit"
        elif self.name == "gptcache":
            hit = bool(json.loads(data).get("gptcache"))
        else:  # LiteLLM marks nothing: a hit replays the stored answer, whose id the mock made once
            answer_id = json.loads(data).get("id")
            hit = self.name != "envoy" and answer_id in self.ids
            self.ids.add(answer_id)
        return took, hit

    def pids(self) -> list[int]:
        """Its processes and all their descendants (LiteLLM's workers)."""
        todo = [p if isinstance(p, int) else p.pid for p in self.procs]
        seen: list[int] = []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                children = (task / "children").read_text().split() if (task / "children").exists() else []
                todo += [int(c) for c in children]
        return seen

    def rss(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())


def start_litellm(upstream: int, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(json.dumps({
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": f"http://127.0.0.1:{upstream}/v1", "api_key": "sk-mock"}}],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}, "telemetry": False},
    }))
    # No network here: the model cost map ships with the package; no usage telemetry.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_PROXY": "*"}
    proc = subprocess.Popen(
        [str(PEERS / "litellm" / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--num_workers", "1"],
        stdout=open(workdir / "litellm.log", "ab"), stderr=subprocess.STDOUT, env=env, cwd=workdir)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"), "litellm", 180, proc)
    return proc, port


def start_gptcache(upstream: int, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    models = ROOT / "models" / "build"
    # GPTCache counts tokens with tiktoken's cl100k_base, which tiktoken downloads on first use;
    # the LiteLLM package ships that file (no network here).
    tiktoken = next((PEERS / "litellm").glob("lib/python3*/site-packages/litellm/litellm_core_utils/tokenizers"))
    proc = subprocess.Popen(
        [str(PEERS / "gptcache" / "bin" / "python"), str(ROOT / "tests" / "peers" / "gptcache_proxy.py"),
         "--port", str(port), "--upstream", f"http://127.0.0.1:{upstream}/v1",
         "--model", str(models / "minilm-int8.onnx"), "--tokenizer", str(models / "tokenizer.json"),
         "--data-dir", str(workdir / "gptcache")],
        stdout=open(workdir / "gptcache.log", "ab"), stderr=subprocess.STDOUT, cwd=workdir,
        env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tiktoken)})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), "gptcache", 120, proc)
    return proc, port


def wrk_run(port: int, bodies: Path, *, connections: int, seconds: int, offset: int, repeat: bool) -> dict:
    """wrk POSTing line `offset` of `bodies` (`repeat`) or line after line from there:
    {"rps", "requests", "failed" (non-2xx and socket errors)}."""
    threads = 2
    env = {**os.environ, "WRK_BODY": str(bodies), "WRK_OFFSET": str(offset), "WRK_THREADS": str(threads),
           "WRK_REPEAT": "1" if repeat else "0"}
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}/v1/chat/completions"],
        env=env, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "requests": requests,
            "failed": (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="sequential requests per system and scenario")
    ap.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    ap.add_argument("--connections", default="16,64")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--profile", default="release")
    args = ap.parse_args()
    names = args.systems.split(",")
    conns = [int(c) for c in args.connections.split(",")]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench-peers` installs it (Debian package wrk)")

    questions = mmlu_questions()
    workdir = Path(tempfile.mkdtemp(prefix="vane-peers-"))
    bodies = workdir / "bodies.jsonl"
    with open(bodies, "w") as f:
        f.write(json.dumps(body(HIT_QUESTION)) + "\n")  # line 0: the hit
        f.writelines(json.dumps(body(q)) + "\n" for q in questions)
    others: list[subprocess.Popen] = []
    with Stack(upstream_delay=0, profile=args.profile, plain_port=free_port(), log_dir=workdir / "stack") as stack:
        try:
            upstream = stack.models[MODEL]
            peers = {"envoy": Peer("envoy", stack.plain_port, [stack.envoy]),
                     "vane": Peer("vane", stack.envoy_port, [stack.sidecar])}
            if "litellm" in names:
                proc, port = start_litellm(upstream, workdir)
                others.append(proc)
                peers["litellm"] = Peer("litellm", port, [proc])
            if "gptcache" in names:
                proc, port = start_gptcache(upstream, workdir)
                others.append(proc)
                peers["gptcache"] = Peer("gptcache", port, [proc])
            peers = {n: peers[n] for n in names}
            report(peers, questions, bodies, args, conns)
        finally:
            for proc in others:
                stop_process(proc)
    print(f"# logs and the bodies sent: {workdir}")


def report(peers: dict[str, Peer], questions: list[str], bodies: Path, args, conns: list[int]):
    # Put the hit question in every cache (a store may land just after its answer), warm up.
    for peer in peers.values():
        if peer.name != "envoy":
            wait_until(lambda: peer.ask(HIT_QUESTION)[1], f"{peer.name}: the hit question cached", 30)
        for _ in range(20):
            peer.ask(HIT_QUESTION)
    latency = {(n, s): [] for n in peers for s in ("hit", "miss")}
    hits = {(n, s): 0 for n in peers for s in ("hit", "miss")}
    refused = {n: 0 for n in peers}
    for i in range(args.n):
        for peer in peers.values():
            for scenario, question in (("hit", HIT_QUESTION), ("miss", questions[i])):
                took, hit = peer.ask(question)
                if hit is None:
                    refused[peer.name] += 1
                    continue
                latency[peer.name, scenario].append(took)
                hits[peer.name, scenario] += hit
    # Body line k + 1 is questions[k]: the sequential pass used the first n; each miss run
    # continues where the last one stopped, so no question is asked twice while the file lasts.
    offsets = {n: args.n + 1 for n in peers}
    runs: dict[tuple[str, str, int], dict] = {}
    for c in conns:
        for scenario in ("hit", "miss"):
            for peer in peers.values():
                run = wrk_run(peer.port, bodies, connections=c, seconds=args.seconds, offset=0 if scenario == "hit" else offsets[peer.name],
                          repeat=scenario == "hit")
                if scenario == "miss":
                    offsets[peer.name] += run["requests"] + c
                runs[peer.name, scenario, c] = run
                print(f"# wrk {peer.name:8} {scenario:4} c={c:<3} {run['rps']:9.1f} req/s  {run['requests']} requests, {run['failed']} failed",
                      flush=True)
    rss = {n: p.rss() for n, p in peers.items()}

    print(f"\n# sequential: {args.n} requests per system and scenario, interleaved, keep-alive, loopback; "
          f"wrk -t2, {args.seconds} s per run; sidecar profile {args.profile}; {os.cpu_count()} cores")
    for name in peers:
        if offsets[name] > len(questions) + 1:
            print(f"# {name}: the miss runs sent {offsets[name] - 1} questions, more than the {len(questions)} distinct ones: "
                  f"the rest were repeats (lower --seconds)")
    base = {s: statistics.median(latency["envoy", s]) for s in ("hit", "miss")} if "envoy" in peers else None
    cols = ["system", "hit p50 ms", "hit p99 ms", "miss p50 ms", "miss p99 ms"]
    cols += [f"{s}/s c={c}" for c in conns for s in ("hit", "miss")]
    cols += ["served from cache (hit / miss runs)", "non-200 (sequential)", "RSS MiB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name in peers:
        row = [name]
        for s in ("hit", "miss"):
            p50, p99 = statistics.median(latency[name, s]), percentile(latency[name, s], 0.99)
            row += [f"{p50:.2f}" + (f" ({p50 / base[s]:.2f}×)" if base else ""), f"{p99:.2f}"]
        for c in conns:
            for s in ("hit", "miss"):
                rps = runs[name, s, c]["rps"]
                ref = runs["envoy", s, c]["rps"] if "envoy" in peers else None
                failed = runs[name, s, c]["failed"]
                row.append(f"{rps:.0f}" + (f" ({rps / ref:.2f}×)" if ref else "") + (f", {failed} failed" if failed else ""))
        row.append(f"{hits[name, 'hit']}/{len(latency[name, 'hit'])} / {hits[name, 'miss']}/{len(latency[name, 'miss'])}")
        row.append(str(refused[name]))
        row.append(f"{rss[name]:.0f}")
        print("| " + " | ".join(row) + " |")
    print("\n(×: the ratio to envoy alone in the same column; RSS: the system's own processes, envoy's including the filter VM)")


if __name__ == "__main__":
    main()
