"""Only complete, successful answers are cached: upstream errors, broken (truncated) answers and
answers that look successful but are not (a 203 or 206, an error inside a 200 stream, a cut or
filtered answer, an overload notice, Cache-Control: no-store) are passed to the client as they
are and never served again from the cache. The sidecar decides (crates/sidecar/src/completion.rs)
and counts each refusal by reason in vane_cache_stores_total{result}."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from helpers import chat_body, sse_chunks, sse_content, sse_events
from stack import wait_until

MATH = "Solve 2x + 5 = 17 for x."


@pytest.mark.parametrize("status", [500, 503, 429])
def test_upstream_error_is_not_cached(vane, status):
    r = vane.chat(MATH, headers={"x-mock-status": str(status)})
    assert r.status == status, r
    assert r.header("x-mock-upstream") == "math-model", r  # routed, then the upstream failed
    assert r.cache == "miss", r
    assert "Injected failure" in r.json()["error"]["message"]  # the upstream's own error body
    vane.assert_not_cached(chat_body(MATH))

    r = vane.chat(MATH)  # the same prompt again: goes upstream, not a cached error
    assert r.status == 200 and r.cache == "miss", r
    assert r.content == f"math-model answers: {MATH}"
    assert len(vane.upstream_requests("math-model")) == 2

    # Control: a good answer is cached.
    hit = vane.wait_cached(chat_body(MATH))
    assert hit.body == r.body


def test_truncated_stream_is_not_cached(vane):
    sent = chat_body(MATH, stream=True)
    r = vane.post(sent, {"x-mock-truncate": "1"})
    assert r.status == 200 and r.cache == "miss", r
    assert r.truncated, r  # the client saw the break too
    assert "[DONE]" not in r.body.decode()
    vane.assert_not_cached(sent)

    r = vane.post(sent)  # the identical request: a miss, complete this time
    assert r.status == 200 and r.cache == "miss", r
    assert not r.truncated
    assert sse_events(r.body)[-1] == "[DONE]"
    assert r.content == f"math-model answers: {MATH}"
    assert len(vane.upstream_requests("math-model")) == 2

    vane.wait_cached(sent)  # control: now it is cached, and replays in full
    r = vane.post(sent)
    assert r.cache == "hit", r
    sse_chunks(r.body)
    assert r.content == f"math-model answers: {MATH}"
    assert len(vane.upstream_requests("math-model")) == 2


@pytest.mark.parametrize("how", ["1", "rst"])
def test_truncated_json_answer_is_not_cached(vane, how):
    sent = chat_body(MATH)
    r = vane.post(sent, {"x-mock-truncate": how})
    assert r.status != 200 or r.truncated, r  # the client never gets a whole answer
    vane.assert_not_cached(sent)
    r = vane.post(sent)
    assert r.status == 200 and r.cache == "miss", r
    assert r.content == f"math-model answers: {MATH}"
    assert len(vane.upstream_requests("math-model")) == 2


def test_answer_over_max_response_bytes_is_not_cached(make_stack):
    v = make_stack(filter_config={"max_response_bytes": 600})
    short, long = "What is 12 times 14?", "What is 12 times 14? " + "Show every step. " * 20
    r = v.chat(long)
    assert r.status == 200 and r.cache == "miss" and len(r.body) > 600, r
    assert r.content == f"math-model answers: {long}"  # passed to the client in full
    v.assert_not_cached(chat_body(long))

    r = v.chat(short)  # control: a small answer is cached
    assert r.status == 200 and len(r.body) < 600, r
    v.wait_cached(chat_body(short))


def test_a_stream_the_client_abandons_is_not_cached(vane):
    # A long answer: one chunk per word, 20 ms apart, so the stream outlives the client.
    prompt = "Repeat these words: " + " ".join(f"word{i}" for i in range(60))
    body = chat_body(prompt, stream=True)
    conn = http.client.HTTPConnection("127.0.0.1", vane.stack.envoy_port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), dict(vane.headers()))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("x-vane-cache") == "miss"
    assert resp.read1(256)  # the first events, then the client goes away
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    time.sleep(1.6)  # longer than the whole stream would have taken
    vane.assert_not_cached(chat_body(prompt, stream=True))
    # Control: read to the end, the same request is stored.
    r = vane.post(body)
    assert r.status == 200 and sse_content(r.body).endswith("word59"), r
    vane.wait_cached(body)


# Answers that look fine and are not, as the mock upstream sends them (tests/mock_upstream.py):
# (test id, request headers that inject it, streamed, the Store result that refuses it).
NOT_CACHEABLE = [
    ("status-203", {"x-mock-status": "203"}, False, "status"),
    ("status-206-stream", {"x-mock-status": "206"}, True, "status"),
    ("error-event-without-an-error-key", {"x-mock-error": "event"}, True, "upstream_error"),
    ("object-error-then-finish-and-done", {"x-mock-error": "object"}, True, "upstream_error"),
    ("type-error-event", {"x-mock-error": "type"}, True, "upstream_error"),
    ("error-key-event", {"x-mock-error": "key"}, True, "upstream_error"),
    ("error-body-with-200", {"x-mock-error": "object"}, False, "upstream_error"),
    ("finish-length", {"x-mock-finish": "length"}, False, "finish_length"),
    ("finish-length-stream", {"x-mock-finish": "length"}, True, "finish_length"),
    ("finish-content-filter", {"x-mock-finish": "content_filter"}, False, "finish_content_filter"),
    ("finish-content-filter-stream", {"x-mock-finish": "content_filter"}, True, "finish_content_filter"),
    ("cache-control-no-store", {"x-mock-cache-control": "no-store"}, False, "no_store"),
    ("cache-control-private-stream", {"x-mock-cache-control": "private, max-age=60"}, True, "no_store"),
    ("overloaded-text", {"x-mock-content": "The server is overloaded. Please try again later."}, False, "overloaded"),
    ("rate-limit-text-stream", {"x-mock-content": "Rate limit exceeded"}, True, "overloaded"),
    ("content-type-text-plain", {"x-mock-content-type": "text/plain"}, False, "content_type"),
]


@pytest.mark.parametrize("inject, stream, result", [c[1:] for c in NOT_CACHEABLE], ids=[c[0] for c in NOT_CACHEABLE])
def test_an_answer_that_only_looks_successful_is_not_cached(vane, inject, stream, result):
    sent = chat_body(MATH, stream=stream)
    before = vane.store_counts().get(result, 0)
    r = vane.post(sent, inject)
    assert r.status == int(inject.get("x-mock-status", 200)) and r.cache == "miss", r
    assert r.header("x-mock-upstream") == "math-model" and not r.truncated, r  # passed on as sent
    # The filter sent the Store (a whole 2xx answer); the sidecar refused it, for this reason.
    wait_until(lambda: vane.store_counts().get(result, 0) == before + 1, f"a Store refused as {result}", 5)
    vane.assert_not_cached(sent)

    r = vane.post(sent)  # the identical request: a miss that reaches the upstream
    assert r.status == 200 and r.cache == "miss", r
    assert r.content == f"math-model answers: {MATH}"
    assert len(vane.upstream_requests("math-model")) == 2

    hit = vane.wait_cached(sent)  # control: the complete, successful answer is cached
    assert hit.content == f"math-model answers: {MATH}"


def test_an_answer_that_mentions_overload_is_cached(vane):
    text = "The server is overloaded when requests arrive faster than it can serve them; add replicas."
    sent = chat_body(MATH)
    r = vane.post(sent, {"x-mock-content": text})
    assert r.status == 200 and r.content == text, r
    assert vane.wait_cached(sent).content == text
