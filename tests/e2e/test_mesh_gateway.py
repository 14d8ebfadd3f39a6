"""The ingress gateway's Envoy as Istio configures it (envoy/mesh_gateway.yaml.tmpl): the filter
arrives by ECDS with the configuration of deploy/kubernetes/overlays/istio/vane-filter.yaml and
calls the sidecar through Istio's cluster name; a new filter configuration pushed while requests
flow takes effect within seconds without failing one, and an invalid one is refused while the
previous one keeps serving."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import CHAT, chat_body, http_request
from stack import ROOT, VENV, free_port, http_ok, render_envoy, stop_process, wait_until

ISTIO_FILTER = ROOT / "deploy" / "kubernetes" / "overlays" / "istio" / "vane-filter.yaml"
PUSH_DEADLINE = 5.0  # seconds for a pushed configuration to reach the requests


def istio_extension_config() -> dict:
    """The ECDS resource the Istio overlay adds (its EXTENSION_CONFIG patch's value)."""
    envoy_filter = yaml.safe_load(ISTIO_FILTER.read_text())
    [patch] = [p for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"]
    return patch["patch"]["value"]


class MeshGateway:
    """Envoy from mesh_gateway.yaml.tmpl in front of a stack's sidecar and upstreams; ``push``
    plays istio-agent: it writes the filter's ECDS resource with a local module, as the agent
    does after fetching the image."""

    def __init__(self, stack, wasm: Path):
        self.stack, self.wasm = stack, wasm
        self.port, self.admin_port = free_port(), free_port()
        self.ecds_dir = stack.dir / "ecds"
        self.ecds_dir.mkdir(exist_ok=True)
        self.extension = istio_extension_config()
        self.version = 0
        self.envoy: subprocess.Popen | None = None

    def plugin_config(self) -> dict:
        return json.loads(self.extension["typed_config"]["config"]["configuration"]["value"])

    def push(self, plugin_config: dict, **wasm_fields):
        """Writes the ECDS file with ``plugin_config`` (and ``wasm_fields`` over the Wasm config's
        own, None removing one); by rename, so Envoy never reads half a file."""
        self.version += 1
        resource = json.loads(json.dumps(self.extension))
        config = resource["typed_config"]["config"]
        for name, value in wasm_fields.items():
            if value is None:
                config.pop(name, None)
            else:
                config[name] = value
        config["configuration"]["value"] = json.dumps(plugin_config)
        config["vm_config"]["code"] = {"local": {"filename": str(self.wasm)}}
        response = {"version_info": str(self.version),
                    "resources": [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", **resource}]}
        tmp = self.ecds_dir / ".vane.json.tmp"
        tmp.write_text(json.dumps(response))
        os.replace(tmp, self.ecds_dir / "vane.json")

    def start(self, plugin_config: dict):
        self.push(plugin_config)
        config = self.stack.dir / "mesh-gateway.yaml"
        config.write_text(render_envoy(
            "mesh_gateway.yaml.tmpl", ENVOY_PORT=self.port, ENVOY_ADMIN_PORT=self.admin_port,
            FILTER_NAME=self.extension["name"], ECDS_FILE=self.ecds_dir / "vane.json", ECDS_DIR=self.ecds_dir,
            SIDECAR_PORT=self.stack.sidecar_port, MATH_PORT=self.stack.models["math-model"],
            GENERAL_PORT=self.stack.models["general-model"]) + "\n")
        # envoy.log: the name the crash checks and the failure reports read.
        self.envoy = subprocess.Popen(
            [str(VENV / "bin" / "envoy"), "-c", str(config), "--disable-hot-restart", "--concurrency", "2",
             "--log-level", "warn", "--component-log-level", "wasm:info,config:info"],
            stdout=open(self.stack.dir / "envoy.log", "ab"), stderr=subprocess.STDOUT)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.admin_port}/ready"), "mesh gateway", 30, self.envoy)

    def stop(self):
        stop_process(self.envoy)

    def log(self) -> str:
        return (self.stack.dir / "envoy.log").read_text(errors="replace")

    def chat(self, prompt: str, api_key: str):
        return http_request(self.port, "POST", CHAT, json.dumps(chat_body(prompt)).encode(),
                            {"content-type": "application/json", "authorization": f"Bearer {api_key}"}, timeout=10)


class Load(threading.Thread):
    """Sends chat requests one after another until stopped; keeps every reply (or exception)."""

    def __init__(self, gateway: MeshGateway, api_key: str):
        super().__init__(daemon=True)
        self.gateway, self.api_key = gateway, api_key
        self.replies: list = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                self.replies.append(self.gateway.chat("Solve 2x + 5 = 17 for x.", self.api_key))
            except Exception as e:  # noqa: BLE001 - a failed request is what the test counts
                self.replies.append(e)

    def failed(self) -> list:
        return [r for r in self.replies if isinstance(r, Exception) or r.status != 200 or r.truncated
                or r.header("x-vane-fallback")]

    def wait_for(self, predicate, what: str) -> float:
        """Seconds until a reply sent from now on satisfies ``predicate``."""
        start, seen = time.monotonic(), len(self.replies)
        while time.monotonic() - start < PUSH_DEADLINE:
            if any(not isinstance(r, Exception) and predicate(r) for r in self.replies[seen:]):
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"{what}: not within {PUSH_DEADLINE}s; last replies: {self.replies[-3:]}")


def filtered(reply) -> bool:
    return reply.header("x-vane-cache") is not None


@pytest.fixture
def gateway(make_stack):
    vane = make_stack(envoy=False)
    g = MeshGateway(vane.stack, vane.stack.wasm)
    g.vane = vane
    try:
        yield g
    finally:
        g.stop()


def test_istio_cluster_name_reaches_the_sidecar(gateway):
    config = gateway.plugin_config()
    assert "|" in config["sidecar_cluster"] and config["sidecar_authority"]
    gateway.start(config)
    r = gateway.chat("Solve 2x + 5 = 17 for x.", gateway.vane.api_key)
    assert r.status == 200 and r.header("x-vane-fallback") is None, r
    assert r.header("x-vane-model") == "math-model" and r.header("x-vane-category") == "math", r


def test_ecds_push_under_load(gateway):
    base = gateway.plugin_config()
    gateway.start(base)
    load = Load(gateway, gateway.vane.api_key)
    load.start()
    try:
        load.wait_for(filtered, "the first configuration")
        # Another path list: chat requests are no longer the filter's, so they pass untouched.
        gateway.push({**base, "paths": ["/v1/responses"]})
        took_off = load.wait_for(lambda r: not filtered(r), "paths without the chat path")
        # Invalid: on_configure refuses it, Envoy keeps the instance it has.
        gateway.push({**base, "timeout_ms": 0})
        wait_until(lambda: "invalid plugin configuration: timeout_ms: must be at least 1" in gateway.log(),
                   "on_configure's refusal", PUSH_DEADLINE)
        wait_until(lambda: "Filesystem config update rejected" in gateway.log(), "Envoy's rejection", PUSH_DEADLINE)
        gateway.vane.mark_crashes()  # Envoy logs the refused instance as "Wasm VM failed": expected here
        seen = len(load.replies)
        time.sleep(0.5)
        after_invalid = load.replies[seen:]
        assert after_invalid and not any(filtered(r) for r in after_invalid if not isinstance(r, Exception))
        gateway.push(base)
        took_on = load.wait_for(filtered, "the chat path again")
    finally:
        load.stopping.set()
        load.join(timeout=15)
    failed = load.failed()
    print(f"ECDS pushes under load: sent={len(load.replies)} failed={len(failed)} "
          f"(paths change took {took_off:.2f}s, back {took_on:.2f}s)")
    assert len(load.replies) > 20
    assert failed == [], failed[:5]


def test_without_allow_on_headers_stop_iteration_chat_requests_hang(gateway):
    """Why the Istio overlay is an EnvoyFilter: the Wasm config Istio builds for a WasmPlugin
    lacks allow_on_headers_stop_iteration, and then Envoy holds the body from a filter that
    paused on the headers, so the request never reaches the filter's body callback."""
    gateway.start(gateway.plugin_config())
    assert gateway.chat("What is 2 + 2?", gateway.vane.api_key).status == 200
    gateway.push(gateway.plugin_config(), allow_on_headers_stop_iteration=None)
    time.sleep(1)  # Envoy applies the file within ~0.1 s (test_ecds_push_under_load)
    with pytest.raises(TimeoutError):
        http_request(gateway.port, "POST", CHAT, json.dumps(chat_body("What is 3 + 3?")).encode(),
                     {"content-type": "application/json", "authorization": f"Bearer {gateway.vane.api_key}"}, timeout=3)
