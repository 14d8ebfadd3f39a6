"""`make compose-test`: the compose demo run for real, in containers (podman; tests/containers.py).

Builds the images (up to date ones are kept), brings docker-compose.yml up, waits for every
service to be healthy, then sends the demo's requests through the Envoy container:
  1. the renewable-energy question with "model": "auto": a miss answered by a model container;
     once its answer is stored (the sidecar's metrics say so), the same question is a hit from
     the Milvus cache;
  2. a maths question: routed to the math-model container;
  3. the sidecar container stopped: the request is still answered (x-vane-fallback);
then removes everything (containers, network, volume) and checks nothing of it is left. Before
that, two start errors of the sidecar image (a missing and a corrupt model file, each named)
and the image serving with the Kubernetes base's configuration.
Prints the times to healthy, the miss and hit latencies and the image sizes. Exit status 0 on
success; any failed check raises and leaves a non-zero status.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import containers
from containers import SIDECAR_IMAGE, ComposeStack, podman, project_leftovers
from stack import wait_until

RENEWABLE = "What are the main benefits of renewable energy?"
MATHS = "What is the integral of x squared?"


def chat(stack: ComposeStack, prompt: str, **headers: str) -> tuple[int, dict[str, str], dict, float]:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port}/v1/chat/completions", body,
                                     {"content-type": "application/json", "authorization": "Bearer sk-demo", **headers})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, headers, payload = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, payload = e.code, dict(e.headers), e.read()
    took = time.monotonic() - started
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(payload), took


def stored(stack: ComposeStack) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith('vane_cache_stores_total{result="stored"}'))


def check(condition: bool, what: str, detail: object = "") -> None:
    if not condition:
        raise AssertionError(f"{what}: {detail}")
    print(f"  ok  {what}", flush=True)


def start_errors() -> None:
    """The sidecar image refuses to start without a readable model, naming the file."""
    def start(*mount: str) -> subprocess.CompletedProcess:
        return podman("run", "--rm", *mount, SIDECAR_IMAGE, check=False, capture=True, timeout=60)

    missing = start("--tmpfs", "/opt/vane/models/build:notmpcopyup")
    check(missing.returncode == 2 and "model.onnx: cannot read config/../models/build/minilm-int8.onnx" in missing.stdout,
          "a missing model file is a start error naming it", missing.stdout[-600:])
    with tempfile.NamedTemporaryFile(suffix=".onnx") as bad:
        bad.write(b"not an onnx model")
        bad.flush()
        os.chmod(bad.name, 0o644)  # the image's user is not root
        corrupt = start("-v", f"{bad.name}:/opt/vane/models/build/minilm-int8.onnx:ro")
    check(corrupt.returncode == 2 and "cannot load config/../models/build/minilm-int8.onnx" in corrupt.stdout,
          "a corrupt model file is a start error naming it", corrupt.stdout[-600:])


def kubernetes_config_starts() -> None:
    """The Kubernetes base's config (deploy/kubernetes/base/vane.yaml, mounted at /etc/vane as its
    ConfigMap is, with a ticket key where its Secret goes) names the image's own files: the
    sidecar image serves with it."""
    config = containers.ROOT / "deploy" / "kubernetes" / "base" / "vane.yaml"
    name = f"vane-k8s-config-{os.getpid()}"
    key = tempfile.NamedTemporaryFile(prefix="vane-ticket-key-")  # the Secret vane-ticket-key
    key.write(os.urandom(32))
    key.flush()
    os.chmod(key.name, 0o644)  # the image's user is not root
    podman("run", "-d", "--name", name, "--read-only", "-v", f"{config}:/etc/vane/vane.yaml:ro",
           "-v", f"{key.name}:/etc/vane-ticket-key/key:ro", SIDECAR_IMAGE, "serve", "--config", "/etc/vane/vane.yaml",
           capture=True)
    try:
        ready = lambda: podman("exec", name, "vane-sidecar", "probe", check=False, capture=True).returncode == 0  # noqa: E731
        wait_until(ready, "the sidecar image with the Kubernetes config", 60)
        check(True, "the Kubernetes ConfigMap's vane.yaml serves in the sidecar image (read-only root)")
    except BaseException:
        print(podman("logs", name, check=False, capture=True).stdout[-2000:], file=sys.stderr)
        raise
    finally:
        podman("rm", "-f", "-t", "2", name, check=False, capture=True)
        key.close()


def demo(stack: ComposeStack) -> dict[str, float]:
    status, headers, body, miss = chat(stack, RENEWABLE)
    check(status == 200 and headers.get("x-vane-cache") == "miss", "first question: a miss", (status, headers))
    check(headers.get("x-mock-upstream") == "general-model", "answered by the general-model container", headers)
    wait_until(lambda: stored(stack) >= 1, "the answer stored in Milvus", 15)
    # Milvus makes a write searchable within about a second (bounded consistency). Until then a
    # probe is a miss that the mock answers with an error, which is never cached.
    wait_until(lambda: chat(stack, RENEWABLE, **{"x-mock-status": "503"})[1].get("x-vane-cache") == "hit",
               "the stored answer searchable in Milvus", 15)
    status, headers, again, hit = chat(stack, RENEWABLE)
    check(status == 200 and headers.get("x-vane-cache") == "hit", "the same question again: a hit", (status, headers))
    check("x-mock-upstream" not in headers and again["choices"] == body["choices"], "the cached answer, no model asked", headers)

    status, headers, body, routed = chat(stack, MATHS)
    check(status == 200 and headers.get("x-vane-model") == "math-model" and headers.get("x-mock-upstream") == "math-model",
          "a maths question: routed to the math-model container", headers)

    stack.compose("stop", "--timeout", "5", "sidecar", capture=True)
    status, headers, body, fallback = chat(stack, "Name three rivers in Africa.")
    check(status == 200 and headers.get("x-vane-fallback", "").startswith("sidecar") and "x-mock-upstream" in headers,
          "sidecar stopped: answered anyway, fail-open", headers)
    return {"miss": miss, "hit": hit, "routed miss": routed, "fail-open": fallback}


def main() -> int:
    started = time.monotonic()
    containers.images()
    print("sidecar start errors:", flush=True)
    start_errors()
    kubernetes_config_starts()
    # A project of its own: a demo brought up with `make compose-up` is left alone.
    stack = ComposeStack(project=f"vanetest{os.getpid()}")
    try:
        healthy = stack.up()
        print("healthy after `up` (s): " + ", ".join(f"{name} {t:.1f}" for name, t in healthy.items()), flush=True)
        print("demo through the containers:", flush=True)
        times = demo(stack)
    except BaseException:
        print(stack.logs("sidecar")[-3000:], stack.logs("envoy")[-2000:], sep="\n", file=sys.stderr)
        raise
    finally:
        stack.down()
    left = {kind: names for kind, names in project_leftovers(stack.project).items() if names}
    check(not left, "down removed every container, network and volume", left)
    print("latency through Envoy (ms): " + ", ".join(f"{name} {t * 1000:.0f}" for name, t in times.items()))
    print("image sizes (MB): " + ", ".join(f"{image.split('/')[-1]} {size / 1e6:.0f}"
                                           for image, size in containers.image_sizes().items()))
    print(f"compose-test passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
