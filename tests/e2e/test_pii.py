"""PII policy through Envoy (issue: safety signals). config/vane.yaml plus a `safety.pii` section:
math-model may receive every PII type, general-model only email addresses.

block  → 403 OpenAI error naming the types, nothing reaches any model
route  → the request goes to a model allowed to receive the PII (math-model)
redact → the upstream receives the body with typed placeholders; the client gets the answer
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import chat_body
from stack import config_variant

CARD = "My card is 4111 1111 1111 1111 and my email is jane.doe@example.com. When did the First World War begin?"


def config_with_pii(tmp_path: Path, action: str) -> Path:
    """config/vane.yaml with a PII policy beside its jailbreak detection."""
    return config_variant(tmp_path / f"vane-pii-{action}.yaml", "pii", {"safety": {"pii": {"action": action}}})


@pytest.fixture
def pii_stack(make_stack, tmp_path):
    return lambda action: make_stack(sidecar_config=config_with_pii(tmp_path, action))


def test_block_is_a_403_naming_the_types_and_nothing_is_forwarded(pii_stack):
    v = pii_stack("block")
    r = v.chat(CARD)
    assert r.status == 403, r
    err = r.json()["error"]
    assert err["code"] == "pii_not_allowed" and err["type"] == "invalid_request_error", err
    assert "credit_card" in err["message"] and "general-model" in err["message"], err
    assert "4111" not in err["message"] and "jane" not in err["message"]
    assert v.upstream_count() == 0
    # Allowed PII (email) and no PII pass; a model allowed everything gets the card.
    assert v.chat("Email jane.doe@example.com: when did the First World War begin?").status == 200
    r = v.chat(CARD, model="math-model")
    assert r.status == 200 and r.header("x-vane-model") == "math-model", r
    counts = v.get_metrics_text()
    assert 'vane_safety_decisions_total{signal="pii",action="block"} 1' in counts
    assert 'vane_pii_findings_total{type="credit_card"} 2' in counts
    assert "4111" not in (v.stack.dir / "sidecar.log").read_text()


def test_route_sends_the_request_to_a_model_allowed_to_receive_it(pii_stack):
    v = pii_stack("route")
    r = v.chat(CARD)
    assert r.status == 200, r
    assert r.header("x-vane-model") == "math-model" and r.header("x-vane-pii") == "route:credit_card", r
    name, got = v.only_upstream_request()
    assert name == "math-model"
    assert got["body"]["messages"][-1]["content"] == CARD  # routed, not altered
    # A client that named general-model explicitly is refused rather than re-routed.
    r = v.chat(CARD, model="general-model")
    assert r.status == 403 and r.json()["error"]["code"] == "pii_not_allowed", r


def test_redact_replaces_what_the_model_may_not_receive(pii_stack):
    v = pii_stack("redact")
    # The earlier turn is routed again (the sidecar has not seen this conversation): a history
    # question, so the conversation is on general-model, which may not receive the SSN.
    history = [{"role": "user", "content": "Who was the first emperor of Rome? My SSN is 536-22-1234."}, {"role": "assistant", "content": "Augustus."}]
    sent = chat_body(CARD, history=history, stream=True)
    r = v.post(sent)
    assert r.status == 200 and r.header("x-vane-pii") == "redact:credit_card,us_ssn", r
    name, got = v.only_upstream_request()
    assert name == "general-model"
    msgs = got["body"]["messages"]
    assert msgs[0]["content"] == "Who was the first emperor of Rome? My SSN is [US_SSN]."
    assert msgs[-1]["content"] == CARD.replace("4111 1111 1111 1111", "[CREDIT_CARD]")  # email allowed
    assert got["body"]["stream"] is True and got["body"]["model"] == "general-model"
    assert "4111" not in str(got["body"]) and "536-22" not in str(got["body"])


def test_a_cached_answer_never_carries_one_tenants_pii_to_another(make_stack, tmp_path):
    """No policy acts (math-model may receive everything); the cache partitions must keep
    tenant A's answer, which repeats A's PII, away from tenant B asking the same question."""
    v = make_stack(sidecar_config=config_with_pii(tmp_path, "redact"))
    question = "My card is 4111 1111 1111 1111, what is its limit?"
    a = v.chat(question, model="math-model")
    assert a.status == 200 and "4111" in a.content, a  # the mock echoes the prompt: A's PII
    v.wait_cached(chat_body(question, model="math-model"))
    b = v.chat(question, model="math-model", api_key=v.api_key + "-tenant-b")
    assert b.status == 200 and b.cache == "miss", b
    a_again = v.chat(question, model="math-model")
    assert a_again.cache == "hit", a_again


def test_pii_in_an_input_text_part_is_seen(pii_stack):
    # The text parts are the prompt; an `input_text` part reaches the model too.
    v = pii_stack("block")
    body = chat_body("When did the First World War begin?", model="general-model")
    body["messages"][-1]["content"] = [{"type": "text", "text": "When did the First World War begin?"},
                                       {"type": "input_text", "text": "My card is 4111 1111 1111 1111."}]
    r = v.post(body)
    assert r.status == 403 and r.json()["error"]["code"] == "pii_not_allowed", r
    assert v.upstream_count() == 0
