"""deploy/kubernetes: `make manifests` passes on the repository's overlays and fails on a wrong
field, and the sidecar's Kubernetes configuration stays config/vane.yaml but for its addresses
and file paths."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def manifest_copy(tmp_path) -> Path:
    copy = tmp_path / "kubernetes"
    shutil.copytree(manifests.MANIFESTS, copy)
    return copy


def typo(path: Path, field: str, wrong: str):
    text = path.read_text()
    assert text.count(f"{field}:") >= 1, f"{field} not in {path}"
    path.write_text(text.replace(f"{field}:", f"{wrong}:", 1))


def test_every_overlay_renders_and_validates():
    assert manifests.check(manifests.MANIFESTS) == []


@pytest.mark.parametrize("file, field, wrong, reported", [
    # Kubernetes kinds (kubernetes-validate, strict)
    ("base/deployment.yaml", "readinessProbe", "readinesProbe", "readinesProbe"),
    ("base/autoscaler.yaml", "averageUtilization", "averageUtilisation", "averageUtilisation"),
    # Istio kinds (their CRD schemas, unknown fields refused)
    ("overlays/istio/vane-filter.yaml", "workloadSelector", "workloadSelecter", "workloadSelecter"),
    ("overlays/istio/sidecar-traffic.yaml", "h2UpgradePolicy", "h2UpgradePolcy", "h2UpgradePolcy"),
    # The gateway's envoy.yaml (envoy --mode validate)
    ("overlays/envoy/envoy.yaml", "allow_on_headers_stop_iteration", "allow_on_header_stop_iteration", "envoy.yaml"),
])
def test_a_wrong_field_fails(manifest_copy, file, field, wrong, reported):
    typo(manifest_copy / file, field, wrong)
    problems = manifests.check(manifest_copy)
    assert problems and all(reported in p for p in problems), problems


def test_a_wrong_value_fails(manifest_copy):
    # An enum the CRD lists (HTTP_FILTER, ...), not only field names.
    path = manifest_copy / "overlays/istio/vane-filter.yaml"
    path.write_text(path.read_text().replace("applyTo: HTTP_FILTER", "applyTo: HTTP_FILTERS"))
    problems = manifests.check(manifest_copy)
    assert len(problems) == 1 and "HTTP_FILTERS" in problems[0], problems


def test_the_kubernetes_config_is_the_demo_config_with_cluster_paths():
    demo = yaml.safe_load((ROOT / "config" / "vane.yaml").read_text())
    deployed = yaml.safe_load((manifests.MANIFESTS / "base" / "vane.yaml").read_text())
    demo["server"] = {"grpc": "0.0.0.0:50051", "admin": "0.0.0.0:9190"}
    demo["model"]["onnx"] = "/opt/vane/models/build/minilm-int8.onnx"
    demo["model"]["tokenizer"] = "/opt/vane/models/build/tokenizer.json"
    demo["routing"]["head"] = "/opt/vane/config/heads/mmlu_pro_categories.json"
    demo["safety"]["jailbreak"]["head"] = "/opt/vane/config/heads/jailbreak.json"
    demo["cache"]["tickets"] = {"key_file": "/etc/vane-ticket-key/key"}  # replicas share the key
    assert deployed == demo


def test_the_services_match_the_sidecar_config():
    deployed = yaml.safe_load((manifests.MANIFESTS / "base" / "vane.yaml").read_text())
    services = {s["metadata"]["name"]: s["spec"]["ports"][0]
                for s in yaml.safe_load_all((manifests.MANIFESTS / "base" / "services.yaml").read_text())}
    assert deployed["server"]["grpc"].endswith(f":{services['vane-sidecar']['port']}")
    assert services["vane-sidecar"]["appProtocol"] == "grpc"  # HTTP/2 for dispatch_grpc_call
    assert deployed["server"]["admin"].endswith(f":{services['vane-sidecar-admin']['port']}")
