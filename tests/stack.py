"""The local Vane stack: mock model upstreams, the sidecar, and Envoy with the wasm filter.

Used by `make run` (``python tests/stack.py``: runs in the foreground until Ctrl-C/SIGTERM) and
by the end-to-end tests (``Stack(...)`` as a context manager). Every process it starts binds to
127.0.0.1 and is stopped by PID when the stack stops.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
CONFIG = ROOT / "config" / "vane.yaml"
VARIANTS = ROOT / "tests" / "e2e" / "variants"
# Keys of the sidecar config whose values are files: relative to config/ in vane.yaml and in a variant.
PATH_KEYS = ("onnx", "tokenizer", "onnxruntime", "head", "snapshot")
DEFAULT_MODELS = {"math-model": None, "general-model": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_variant(out: Path, *variants: str | dict) -> Path:
    """config/vane.yaml with each variant merged over it in turn, written to ``out``.

    A variant is the name of a file in tests/e2e/variants/ (``"jailbreak-flag"``) or a dict (for
    values a test computes). Merging: where both sides have a map, the maps merge key by key,
    recursively; anything else in the variant (a list, a scalar) replaces what was there; a null
    removes the key (``safety: { jailbreak: null }``). Paths are relative to config/, as in
    vane.yaml; they are written out absolute, so ``out`` may be anywhere.
    """
    config = yaml.safe_load(CONFIG.read_text())
    for variant in variants:
        if isinstance(variant, str):
            variant = yaml.safe_load((VARIANTS / f"{variant}.yaml").read_text())
        config = merge(config, variant)
    out.write_text(yaml.safe_dump(absolute_paths(config), sort_keys=False, allow_unicode=True))
    return out


def merge(base, over):
    """``over`` deep-merged over ``base`` (config_variant's rules)."""
    if not isinstance(over, dict):
        return over
    merged = dict(base) if isinstance(base, dict) else {}
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


def absolute_paths(config):
    if isinstance(config, list):
        return [absolute_paths(v) for v in config]
    if not isinstance(config, dict):
        return config
    return {k: os.path.normpath(CONFIG.parent / v) if k in PATH_KEYS and isinstance(v, str) else absolute_paths(v)
            for k, v in config.items()}


def onnxruntime_library() -> str:
    found = sorted((VENV / "lib").glob("python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*"))
    if not found:
        raise RuntimeError("libonnxruntime not found in .venv: run `make venv`")
    return str(found[-1])


def wait_until(check, what: str, timeout: float = 30.0, proc: subprocess.Popen | None = None):
    """Retries `check` until it returns truthy, and returns that; fails early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if got := check():
                return got
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready after {timeout}s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


def render_envoy(template: str, **values) -> str:
    """``envoy/<template>`` with its ``${NAME}`` placeholders filled in (a missing one is an
    error), without its final newline: the including template puts each fragment on its own line."""
    return string.Template((ROOT / "envoy" / template).read_text()).substitute(values).rstrip("\n")


def envoy_config(*, envoy_port: int, admin_port: int, sidecars: list[tuple[str, int]], models: dict[str, tuple[str, int]],
                 default_model: str, wasm: Path | str, filter_config: dict, buffer_limit: int, timeouts: dict[str, float],
                 tenant_header: str, plain_port: int | None = None, jwt: dict | None = None,
                 listen: str = "127.0.0.1", cluster_type: str = "STATIC") -> str:
    """The Envoy configuration (envoy/envoy.yaml.tmpl and its fragments). Each of `sidecars` (the
    replicas of one cluster) and of `models` is (host, port); `cluster_type` STATIC takes IP
    addresses, STRICT_DNS names."""
    endpoints = [render_envoy("sidecar_endpoint.yaml.tmpl", HOST=host, PORT=port) for host, port in sidecars]
    routes = [render_envoy("route.yaml.tmpl", MODEL=name) for name in models]
    clusters = [render_envoy("cluster.yaml.tmpl", MODEL=name, HOST=host, PORT=port, CLUSTER_TYPE=cluster_type)
                for name, (host, port) in models.items()]
    plain = jwt_authn = ""
    if plain_port:
        plain = render_envoy("plain_listener.yaml.tmpl", PORT=plain_port, CLUSTER=f"model_{default_model}")
    if jwt:
        jwt_authn = render_envoy("jwt_authn.yaml.tmpl", ISSUER=jwt["issuer"], JWKS=jwt["jwks"], CLAIM=jwt["claim"],
                                 TENANT_HEADER=tenant_header)
    return render_envoy(
        "envoy.yaml.tmpl", LISTEN_ADDRESS=listen, ENVOY_PORT=envoy_port, ENVOY_ADMIN_PORT=admin_port,
        CLUSTER_TYPE=cluster_type, SIDECAR_ENDPOINTS="\n".join(endpoints), BUFFER_LIMIT=buffer_limit,
        WASM=wasm, FILTER_CONFIG=json.dumps(filter_config), DEFAULT_CLUSTER=f"model_{default_model}",
        ROUTES="\n".join(routes), CLUSTERS="\n".join(clusters), PLAIN_LISTENER=plain, TENANT_HEADER=tenant_header,
        JWT_AUTHN=jwt_authn, **{k: f"{v}s" for k, v in timeouts.items()}) + "\n"


class Stack:
    """Starts the stack on free (or given) loopback ports; `stop()` ends every process."""

    def __init__(self, *, models: dict[str, int | None] | None = None, default_model: str = "general-model",
                 envoy_port: int | None = None, sidecar_port: int | None = None, admin_port: int | None = None,
                 filter_config: dict | None = None, sidecar_config: Path | None = None, upstream_delay: float = 0.0,
                 profile: str = "debug", buffer_limit: int = 8 << 20, log_dir: Path | None = None,
                 plain_port: int | None = None, request_headers_timeout: float = 10,
                 request_timeout: float = 60, stream_idle_timeout: float = 300, jwt: dict | None = None,
                 envoy: bool = True, sidecars: int = 1):
        self.models = dict(models or DEFAULT_MODELS)
        self.default_model = default_model
        self.envoy_port = envoy_port or free_port()
        self.envoy_admin_port = free_port()
        self.sidecar_port = sidecar_port or free_port()
        self.admin_port = admin_port or free_port()
        # Replicas behind Envoy's one sidecar cluster: (gRPC port, admin port) each, the first
        # being sidecar_port and admin_port. They share the sidecar config (so its ticket key).
        self.replica_ports = [(self.sidecar_port, self.admin_port)] + [(free_port(), free_port()) for _ in range(sidecars - 1)]
        self.filter_config = {"sidecar_cluster": "vane_sidecar", **(filter_config or {})}
        # Envoy strips this header from every client request and sets it only from a verified JWT.
        self.tenant_header = self.filter_config.get("tenant_header", "x-vane-tenant")
        # {"issuer", "jwks" (a JWKS JSON string), "claim"}: Envoy's jwt_authn verifies bearer JWTs
        # with these keys and copies the claim into tenant_header (requests without a JWT pass).
        self.jwt = jwt
        self.sidecar_config = sidecar_config or CONFIG
        self.upstream_delay = upstream_delay
        self.buffer_limit = buffer_limit
        # A second listener without the filter, to the default model: the baseline in benchmarks.
        self.plain_port = plain_port
        # Envoy's slow-client bounds (seconds): the template's defaults, shorter in their tests.
        self.timeouts = {"REQUEST_HEADERS_TIMEOUT": request_headers_timeout, "REQUEST_TIMEOUT": request_timeout,
                         "STREAM_IDLE_TIMEOUT": stream_idle_timeout}
        self.embedder_bin = Path(os.environ.get("VANE_EMBEDDER", ROOT / "target" / profile / "vane-sidecar"))
        self.wasm = Path(os.environ.get("VANE_WASM", ROOT / "target" / "wasm32-wasip1" / "wasm" / "vane_filter.wasm"))
        self.dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="vane-stack-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        # False: upstreams and sidecar only, for a test that runs a gateway of its own.
        self.with_envoy = envoy
        self.upstreams: dict[str, subprocess.Popen] = {}
        self.sidecar: subprocess.Popen | None = None
        self.replicas: list[subprocess.Popen | None] = []  # every sidecar, the first being `sidecar`
        self.envoy: subprocess.Popen | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        for name in self.models:
            self.start_upstream(name)
        self.start_sidecar()
        if self.with_envoy:
            self.start_envoy()

    def stop(self):
        for proc in [self.envoy, *self.replicas, *self.upstreams.values()]:
            stop_process(proc)

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.envoy_port}{path}"

    def upstream_url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.models[name]}{path}"

    # -- parts -----------------------------------------------------------------------------
    def _log(self, name: str):
        return open(self.dir / f"{name}.log", "ab")

    def start_upstream(self, name: str):
        port = self.models.get(name) or 0
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "mock_upstream.py"), "--port", str(port), "--name", name,
             "--delay", str(self.upstream_delay)],
            stdout=subprocess.PIPE, stderr=self._log(f"upstream-{name}"), text=True)
        self.upstreams[name] = proc
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            raise RuntimeError(f"mock upstream {name} did not start (see {self.dir})")
        self.models[name] = int(line[1])

    def start_sidecar(self):
        if not self.embedder_bin.exists():
            raise RuntimeError(f"{self.embedder_bin} is missing: run `make build`")
        self.replicas = [self._spawn_replica(i) for i in range(len(self.replica_ports))]
        self.sidecar = self.replicas[0]
        for proc, (_, admin) in zip(self.replicas, self.replica_ports):
            wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/readyz"), "sidecar", 60, proc)

    def _spawn_replica(self, i: int) -> subprocess.Popen:
        grpc, admin = self.replica_ports[i]
        env = {**os.environ, "ORT_DYLIB_PATH": onnxruntime_library()}
        env.setdefault("VANE_LOG", "info")
        return subprocess.Popen(
            [str(self.embedder_bin), "serve", "--config", str(self.sidecar_config),
             "--grpc", f"127.0.0.1:{grpc}", "--admin", f"127.0.0.1:{admin}"],
            stdout=self._log("sidecar" if i == 0 else f"sidecar-{i + 1}"), stderr=subprocess.STDOUT, env=env)

    def restart_replica(self, i: int, timeout: float = 60):
        """Starts replica ``i`` again on its ports (after it died or was stopped); waits for /readyz."""
        stop_process(self.replicas[i])
        self.replicas[i] = proc = self._spawn_replica(i)
        if i == 0:
            self.sidecar = proc
        admin = self.replica_ports[i][1]
        wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/readyz"), "sidecar", timeout, proc)

    def stop_sidecar(self):
        for proc in self.replicas:
            stop_process(proc)
        self.sidecar, self.replicas = None, []

    def render_envoy_config(self) -> Path:
        """envoy/envoy.yaml.tmpl for this stack, written to its directory."""
        text = envoy_config(
            envoy_port=self.envoy_port, admin_port=self.envoy_admin_port,
            sidecars=[("127.0.0.1", grpc) for grpc, _ in self.replica_ports],
            models={name: ("127.0.0.1", port) for name, port in self.models.items()}, default_model=self.default_model,
            wasm=self.wasm, filter_config=self.filter_config, buffer_limit=self.buffer_limit, timeouts=self.timeouts,
            tenant_header=self.tenant_header, plain_port=self.plain_port, jwt=self.jwt)
        path = self.dir / "envoy.yaml"
        path.write_text(text)
        return path

    def start_envoy(self):
        if not self.wasm.exists():
            raise RuntimeError(f"{self.wasm} is missing: run `make build`")
        config = self.render_envoy_config()
        self.envoy = subprocess.Popen(
            [str(VENV / "bin" / "envoy"), "-c", str(config), "--disable-hot-restart", "--concurrency", "2",
             "--log-level", "warn", "--component-log-level", "wasm:info"],
            stdout=self._log("envoy"), stderr=subprocess.STDOUT)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.envoy_admin_port}/ready"), "envoy", 30, self.envoy)

    def logs(self) -> str:
        return "\n".join(f"==> {p.name} <==\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.dir.glob("*.log")))


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description="Run the local Vane stack in the foreground.")
    ap.add_argument("--envoy-port", type=int, default=8801)
    ap.add_argument("--sidecar-port", type=int, default=50051)
    ap.add_argument("--admin-port", type=int, default=9190)
    ap.add_argument("--math-port", type=int, default=8811)
    ap.add_argument("--general-port", type=int, default=8812)
    ap.add_argument("--delay", type=float, default=1.0, help="mock generation time in seconds")
    ap.add_argument("--profile", default="release")
    args = ap.parse_args()

    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = Stack(models={"math-model": args.math_port, "general-model": args.general_port},
                  envoy_port=args.envoy_port, sidecar_port=args.sidecar_port, admin_port=args.admin_port,
                  upstream_delay=args.delay, profile=args.profile, log_dir=ROOT / ".stack")
    try:
        stack.start()
        print(f"""
Vane is up: Envoy on 127.0.0.1:{stack.envoy_port} -> sidecar 127.0.0.1:{stack.sidecar_port} (metrics on :{stack.admin_port}/metrics)
mock models: math-model :{stack.models['math-model']}, general-model :{stack.models['general-model']} ({args.delay}s per answer)
logs: {stack.dir}

Try it (run it twice: the second answer comes from the cache; requests without a credential
are never cached, so each key is a cache tenant of its own):

  curl -si http://127.0.0.1:{stack.envoy_port}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer sk-demo' \\
    -d '{{"model":"auto","messages":[{{"role":"user","content":"What is the integral of x squared?"}}]}}'

Press Ctrl-C to stop.""", flush=True)
        while not stopping:
            for name, proc in [("envoy", stack.envoy), ("sidecar", stack.sidecar), *stack.upstreams.items()]:
                if proc is not None and proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping (logs in {stack.dir})", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    except Exception as e:  # noqa: BLE001 - report and stop everything we started
        print(f"error: {e}\n{stack.logs()}", file=sys.stderr)
        stack.stop()
        sys.exit(1)
    stack.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
