"""Routing: the sidecar classifies the last user message and the filter rewrites the model and
picks the upstream; what the upstream received is read back from the mock's records."""
from __future__ import annotations

import json
import socket
import threading

import pytest
import yaml

from helpers import CHAT, chat_body, routed_to_math

MATH = "Solve 2x + 5 = 17 for x."
HISTORY = "When did the First World War begin?"
PROGRAMMING = "How do I reverse a string in Python?"
UNRELATED = "Recommend a hiking trail near Lisbon."


def compact_len(body: dict) -> int:
    """Byte length of the body as the filter re-serialises it (serde_json: compact, UTF-8)."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


@pytest.fixture
def routing(vane) -> dict:
    """The routing section of the sidecar configuration the stack runs (config/vane.yaml)."""
    return yaml.safe_load(vane.stack.sidecar_config.read_text())["routing"]


def assert_routing_headers(r, model: str, category: str):
    assert r.status == 200, r
    assert r.header("x-vane-model") == model, r
    assert r.header("x-vane-category") == category, r
    confidence = r.header("x-vane-confidence")
    assert confidence is not None and len(confidence.split(".")[1]) == 3, r
    assert 0.0 <= float(confidence) <= 1.0, r
    assert r.cache == "miss", r
    assert r.header("x-vane-fallback") is None, r
    return float(confidence)


def test_math_question_goes_to_math_model_with_model_rewritten(vane, routing):
    sent = chat_body(MATH, temperature=0.5, vendor_ext={"keep": ["me", 1]})
    r = vane.post(sent)
    confidence = assert_routing_headers(r, "math-model", "math")
    assert confidence >= routing["confidence_floor"]  # else it would be "default"
    assert r.header("x-mock-upstream") == "math-model"
    assert r.header("x-vane-reasoning") == "on"
    assert r.json()["model"] == "math-model"
    assert r.content == f"math-model answers: {MATH}"

    name, got = vane.only_upstream_request()
    assert name == "math-model"
    assert "body_text" not in got, got  # the upstream parsed the body
    expected = routed_to_math(sent)
    assert got["body"] == expected  # only the model changed; unknown fields kept
    assert int(got["headers"]["content-length"]) == compact_len(expected)
    # The routing decision travels upstream too.
    assert got["headers"]["x-vane-model"] == "math-model"
    assert got["headers"]["x-vane-category"] == "math"
    assert got["headers"]["x-vane-confidence"] == r.header("x-vane-confidence")
    assert got["headers"]["x-vane-reasoning"] == "on"


# Example categories (config/vane.yaml): history does not reason; programming reasons hard.
# general-model is a gpt-oss-family model, so reasoning is its `reasoning_effort`.
@pytest.mark.parametrize("prompt,category,reasoning,effort", [
    (HISTORY, "history", "off", "low"), (PROGRAMMING, "programming", "on", "high")])
def test_example_categories_go_to_general_model_with_their_reasoning(vane, routing, prompt, category, reasoning, effort):
    r = vane.chat(prompt)
    confidence = assert_routing_headers(r, "general-model", category)
    assert confidence >= routing["example_similarity"]
    assert r.header("x-mock-upstream") == "general-model"
    assert r.header("x-vane-reasoning") == reasoning
    name, got = vane.only_upstream_request()
    assert name == "general-model"
    assert got["body"] == {**chat_body(prompt), "model": "general-model", "reasoning_effort": effort}


def test_client_reasoning_fields_are_merged_not_dropped(vane):
    sent = chat_body(MATH, chat_template_kwargs={"enable_thinking": False, "custom": 1})
    r = vane.post(sent)
    assert_routing_headers(r, "math-model", "math")
    _, got = vane.only_upstream_request()
    assert got["body"]["chat_template_kwargs"] == {"enable_thinking": True, "custom": 1}


def test_head_label_without_a_category_goes_to_the_default_model(vane, routing):
    r = vane.chat(UNRELATED, model="MoM")  # the second alias
    confidence = assert_routing_headers(r, "general-model", "other")  # MMLU-Pro's "other"
    assert confidence >= routing["confidence_floor"]
    assert r.header("x-vane-reasoning") == "off"
    name, got = vane.only_upstream_request()
    assert name == "general-model"
    assert got["body"]["model"] == "general-model"


def test_non_alias_model_is_kept_and_routed_by_name(vane):
    # A maths prompt, but the client named a model: no classification, no rewrite.
    r = vane.chat(MATH, model="general-model")
    assert r.status == 200, r
    assert r.header("x-vane-model") == "general-model"
    assert r.header("x-vane-category") is None and r.header("x-vane-confidence") is None, r
    assert r.cache == "miss"
    assert r.json()["model"] == "general-model"
    name, got = vane.only_upstream_request()
    assert name == "general-model"
    assert got["body"]["model"] == "general-model"

    vane.reset_upstreams()
    r = vane.chat(HISTORY, model="math-model")  # a history prompt pinned to math-model
    assert r.status == 200 and r.header("x-vane-model") == "math-model", r
    name, got = vane.only_upstream_request()
    assert name == "math-model"
    assert got["body"]["model"] == "math-model"


def test_rewrite_fixes_content_length_for_shrinking_and_multibyte_bodies(vane):
    # Pretty-printed (the rewrite is compact, so much shorter) and non-ASCII (bytes != chars).
    sent = chat_body("What is the integral of x² from 0 to π?")
    raw = json.dumps(sent, indent=4, ensure_ascii=False).encode()
    r = vane.post(raw)
    assert_routing_headers(r, "math-model", "math")
    assert r.content == "math-model answers: What is the integral of x² from 0 to π?"
    name, got = vane.only_upstream_request()
    assert name == "math-model" and "body_text" not in got, got
    expected = routed_to_math(sent)
    assert got["body"] == expected
    assert int(got["headers"]["content-length"]) == compact_len(expected) < len(raw)


def test_chunked_request_body_is_routed_and_rewritten(vane):
    sent = chat_body(MATH)
    r = vane.post(sent, chunked=True)
    assert_routing_headers(r, "math-model", "math")
    name, got = vane.only_upstream_request()
    assert name == "math-model" and "body_text" not in got, got
    assert got["body"] == routed_to_math(sent)


def test_query_string_is_ignored_for_the_path_match(vane):
    r = vane.post(chat_body(MATH), path=CHAT + "?trace=1")
    assert_routing_headers(r, "math-model", "math")
    name, got = vane.only_upstream_request()
    assert name == "math-model" and got["path"] == CHAT + "?trace=1"


def test_content_parts_prompt_is_classified(vane):
    sent = {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Solve 2x + 5 = 17"}, {"type": "text", "text": "for x."}]}]}
    r = vane.post(sent)
    assert_routing_headers(r, "math-model", "math")
    name, got = vane.only_upstream_request()
    assert got["body"] == routed_to_math(sent)


def test_concurrent_requests_each_get_their_own_route_and_answer(vane):
    prompts = [(f"Solve {i}x + 5 = {17 + i} for x.", "math-model") for i in range(2, 8)] + \
              [(f"When did the First World War begin? Part {i}.", "general-model") for i in range(6)]
    results: dict[str, object] = {}

    def one(i, p):
        # A tenant per request: these prompts are near-duplicates and must not hit each other.
        results[p] = vane.chat(p, api_key=f"{vane.api_key}-{i}")

    threads = [threading.Thread(target=one, args=(i, p)) for i, (p, _) in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for prompt, model in prompts:
        r = results[prompt]
        assert r.status == 200 and r.header("x-vane-model") == model, (prompt, r)
        assert r.header("x-mock-upstream") == model
        assert r.content == f"{model} answers: {prompt}"
    seen = vane.all_upstream_requests()
    for model in ("math-model", "general-model"):
        got = sorted(q["body"]["messages"][-1]["content"] for q in seen[model])
        assert got == sorted(p for p, m in prompts if m == model)


def test_expect_100_continue_request_is_routed(vane):
    """curl sends large bodies after `Expect: 100-continue`; the filter still sees the body."""
    sent = chat_body(MATH, user="x" * 2000)  # `user` does not change routing or caching
    raw = json.dumps(sent).encode()
    with socket.create_connection(("127.0.0.1", vane.stack.envoy_port), timeout=10) as sock:
        head = [b"POST /v1/chat/completions HTTP/1.1", b"host: vane", b"content-type: application/json",
                b"authorization: Bearer " + vane.api_key.encode(), b"content-length: %d" % len(raw),
                b"expect: 100-continue", b"connection: close"]
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:500]
    assert b"\r\nx-vane-model: math-model\r\n" in head, head
    assert json.loads(body)["choices"][0]["message"]["content"] == f"math-model answers: {MATH}"
    name, got = vane.only_upstream_request()
    assert name == "math-model" and got["body"] == routed_to_math(sent)
