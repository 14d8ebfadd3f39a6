"""The sidecar down or stuck: fail open (forward untouched to the default route, with
x-vane-fallback) or fail closed (503, OpenAI error). Each test has its own stack since it
stops (or freezes) the sidecar."""
from __future__ import annotations

import os
import signal
import time

import openai
import pytest

from helpers import chat_body, sse_chunks

MATH = "Solve 2x + 5 = 17 for x."


def assert_untouched_fallback(v, r, sent: dict, reason: str):
    assert r.status == 200, r
    assert r.header("x-vane-fallback") == reason, r
    # No routing decision and no cache involvement.
    for name in ("x-vane-model", "x-vane-category", "x-vane-confidence", "x-vane-cache"):
        assert r.header(name) is None, (name, r)
    assert r.header("x-mock-upstream") == "general-model"  # the default route
    name, got = v.only_upstream_request()
    assert name == "general-model"
    assert got["body"] == sent  # untouched: the model stays "auto"
    assert got["body"]["model"] == "auto"
    assert got["headers"]["x-vane-fallback"] == reason
    assert "x-vane-model" not in got["headers"]


def test_fail_open_when_the_sidecar_is_down(make_stack):
    v = make_stack()
    r = v.chat(MATH)
    assert r.header("x-vane-model") == "math-model", r  # the stack works before
    v.reset_upstreams()

    v.stack.stop_sidecar()
    sent = chat_body(MATH)
    started = time.monotonic()
    r = v.post(sent)
    assert time.monotonic() - started < 2.0  # no long stall on a refused connection
    assert_untouched_fallback(v, r, sent, "sidecar_unavailable")
    assert r.json()["model"] == "auto"
    assert r.content == f"general-model answers: {MATH}"

    # A streamed request falls back the same way, and the stream is passed through whole.
    v.reset_upstreams()
    sent = chat_body(MATH, stream=True)
    r = v.post(sent)
    assert_untouched_fallback(v, r, sent, "sidecar_unavailable")
    assert r.header("content-type").startswith("text/event-stream")
    assert sse_chunks(r.body)[0]["model"] == "auto"
    assert r.content == f"general-model answers: {MATH}"

    # A client cannot steer a handled request to a cluster with our routing header.
    v.reset_upstreams()
    sent = chat_body(MATH)
    r = v.post(sent, {"x-vane-model": "math-model", "x-vane-fallback": "forged"})
    assert_untouched_fallback(v, r, sent, "sidecar_unavailable")


def test_fail_open_recovers_when_the_sidecar_returns(make_stack):
    v = make_stack()
    v.stack.stop_sidecar()
    assert v.chat(MATH).header("x-vane-fallback") == "sidecar_unavailable"

    v.stack.start_sidecar()  # same port; waits for /readyz
    deadline = time.monotonic() + 10
    while True:
        r = v.chat(MATH)
        if r.header("x-vane-fallback") is None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status == 200 and r.header("x-vane-model") == "math-model", r
    assert r.cache == "miss"


def frozen_sidecar_request(v, sent: dict):
    """Sends ``sent`` while the sidecar process is stopped (alive, connected, not answering)."""
    assert v.chat(MATH).header("x-vane-model") == "math-model"  # connection to the sidecar is up
    v.reset_upstreams()
    pid = v.stack.sidecar.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = v.post(sent)
        return r, time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)


def test_fail_open_on_sidecar_timeout(make_stack):
    v = make_stack(filter_config={"timeout_ms": 200})
    sent = chat_body("Who was the first emperor of Rome?")
    r, took = frozen_sidecar_request(v, sent)
    assert 0.15 < took < 1.5, took  # waited for the deadline, not much longer
    assert_untouched_fallback(v, r, sent, "sidecar_timeout")

    v.reset_upstreams()
    r = v.chat("Find the eigenvalues of [[3, 0], [0, 5]].")  # used again once it answers
    assert r.header("x-vane-model") == "math-model" and r.header("x-vane-fallback") is None, r
    assert r.cache == "miss", r


def test_fail_open_on_sidecar_timeout_says_sidecar_timeout(make_stack):
    v = make_stack(filter_config={"timeout_ms": 200})
    r, _ = frozen_sidecar_request(v, chat_body("Who was the first emperor of Rome?"))
    assert r.status == 200, r
    assert r.header("x-vane-fallback") == "sidecar_timeout", r


def test_fail_closed_answers_503(make_stack):
    v = make_stack(filter_config={"failure_mode": "closed"})
    assert v.chat(MATH).header("x-vane-model") == "math-model"  # the stack works before
    v.reset_upstreams()

    v.stack.stop_sidecar()
    for stream in (False, True):
        r = v.chat(MATH, stream=stream)
        assert r.status == 503, r
        assert r.header("content-type") == "application/json", r
        assert r.header("x-vane-fallback") == "sidecar_unavailable", r
        assert r.header("x-mock-upstream") is None, r
        err = r.json()["error"]
        assert err["type"] == "server_error"
        assert err["code"] == "router_unavailable"
        assert "sidecar_unavailable" in err["message"]
        assert "param" in err and err["param"] is None
    assert v.upstream_count() == 0  # nothing went upstream

    # The official client sees an ordinary server error.
    client = openai.OpenAI(base_url=v.stack.url("/v1"), api_key=v.api_key, max_retries=0, timeout=10)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": MATH}])
    assert e.value.status_code == 503
    assert e.value.code == "router_unavailable"

    # Paths the filter does not handle are not affected.
    r = v.get("/v1/models")
    assert r.status == 200 and r.header("x-mock-upstream") == "general-model", r
