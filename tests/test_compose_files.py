"""The compose demo's files agree with what the tests run (the demo itself: `make compose-test`)."""
from __future__ import annotations

import yaml

import containers
from containers import COMPOSE_ENVOY, COMPOSE_FILE, ROOT


def test_the_compose_envoy_config_is_the_tests_template():
    assert COMPOSE_ENVOY.read_text() == containers.compose_envoy_config(), "run `make compose-config`"


def test_every_service_is_checked_and_started_after_what_it_needs_is_healthy():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert set(services) == {"envoy", "sidecar", "milvus", "math-model", "general-model"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services and how == {"condition": "service_healthy"}, (name, needed)
    # Envoy's clusters name the services; each model service is one of the routing config's models.
    routing = yaml.safe_load((ROOT / "config" / "vane.yaml").read_text())["routing"]
    assert {"math-model", "general-model"} == set(routing["models"])
    for model in routing["models"]:
        assert f"address: {model}, port_value: 8000" in COMPOSE_ENVOY.read_text()
