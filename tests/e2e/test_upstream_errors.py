"""Only complete 2xx answers are cached: upstream errors and broken (truncated) answers are
passed to the client as they are and never served again from the cache."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from helpers import chat_body, sse_chunks, sse_content, sse_events

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
