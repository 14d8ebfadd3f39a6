"""Cache boundaries: an answer is only served to the same tenant, for the same requested model,
with the same conversation around the prompt (system prompt, earlier turns, parameters)."""
from __future__ import annotations

import pytest

from helpers import chat_body

PROMPT = "Who was the first emperor of Rome?"


def assert_miss(r, upstream="general-model"):
    assert r.status == 200, r
    assert r.cache == "miss", r
    assert r.header("x-mock-upstream") == upstream, r


def test_no_hit_across_system_prompts(vane):
    vane.chat_stored(PROMPT, system="You are a pirate. Answer like one.")
    assert_miss(vane.chat(PROMPT, system="You are a lawyer. Answer precisely."))
    assert_miss(vane.chat(PROMPT))  # no system prompt at all
    assert len(vane.upstream_requests("general-model")) == 3
    # Those two are entries of their own now.
    vane.wait_cached(chat_body(PROMPT, system="You are a lawyer. Answer precisely."))
    vane.wait_cached(chat_body(PROMPT))

    r = vane.chat(PROMPT, system="You are a pirate. Answer like one.")
    assert r.cache == "hit", r
    assert r.header("x-vane-similarity") == "1.0000"
    lawyer = vane.chat(PROMPT, system="You are a lawyer. Answer precisely.")
    assert lawyer.cache == "hit", lawyer
    assert len(vane.upstream_requests("general-model")) == 3
    # Each system prompt got its own answer back (the mock numbers its completions).
    assert r.json()["id"] != lawyer.json()["id"]


@pytest.mark.parametrize("other", [
    {"temperature": 0.9},
    {"history": [{"role": "user", "content": "Let's talk about Greece."},
                 {"role": "assistant", "content": "Sure."}]},
    {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
], ids=["temperature", "earlier_turns", "tools"])
def test_no_hit_across_other_context(vane, other):
    vane.chat_stored(PROMPT, temperature=0.2)
    kwargs = {"temperature": 0.2, **other}
    assert_miss(vane.chat(PROMPT, **kwargs))
    assert len(vane.upstream_requests("general-model")) == 2


def test_no_hit_across_requested_models(vane):
    vane.chat_stored(PROMPT, model="auto")
    r = vane.chat(PROMPT, model="general-model")  # the same upstream, but asked for by name
    assert_miss(r)
    assert r.json()["model"] == "general-model"
    assert_miss(vane.chat(PROMPT, model="MoM"))  # the other alias is its own partition
    assert len(vane.upstream_requests("general-model")) == 3

    r = vane.chat(PROMPT, model="auto")
    assert r.cache == "hit", r
    assert len(vane.upstream_requests("general-model")) == 3


def test_no_hit_across_tenants(vane):
    key_a, key_b = vane.api_key + "-a", vane.api_key + "-b"
    first = vane.chat_stored(PROMPT, api_key=key_a)

    r = vane.chat(PROMPT, api_key=key_b)
    assert_miss(r)
    r = vane.chat(PROMPT, auth=False)  # anonymous: no cache at all (test_security.py)
    assert r.status == 200 and r.cache == "bypass", r
    r = vane.chat(PROMPT, headers={"api-key": key_a}, auth=False)  # key under another header...
    assert_miss(r)  # ...is another credential string ("Bearer x" != "x")
    assert len(vane.upstream_requests("general-model")) == 4

    r = vane.chat(PROMPT, api_key=key_a)
    assert r.cache == "hit", r
    assert r.body == first.body
    assert len(vane.upstream_requests("general-model")) == 4


def test_same_key_in_api_key_header_is_the_same_tenant(vane):
    first = vane.chat_stored(PROMPT)
    r = vane.chat(PROMPT, headers={"api-key": f"Bearer {vane.api_key}"}, auth=False)
    assert r.cache == "hit", r
    assert r.body == first.body


# A trusted tenant header set from a verified JWT, and clients that try to set it themselves:
# test_security.py::test_a_client_cannot_choose_its_tenant.
