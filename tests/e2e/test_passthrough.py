"""Requests the filter does not handle reach the default upstream untouched and come back
without x-vane-* headers. (A chat POST is always handled, whatever its content-type:
test_security.py.)"""
from __future__ import annotations

from helpers import CHAT, chat_body, http_request

MATH = "Solve 2x + 5 = 17 for x."


def assert_untouched_response(r):
    assert r.vane == {}, r
    assert r.header("x-mock-upstream") == "general-model", r  # the default route


def test_get_models_passes_through(vane):
    r = vane.get("/v1/models", vane.headers())
    assert r.status == 200, r
    assert_untouched_response(r)
    assert r.json() == {"object": "list", "data": [
        {"id": "general-model", "object": "model", "created": 1700000000, "owned_by": "vane-mock"}]}


def test_other_post_path_passes_through_unparsed(vane):
    # A maths prompt to another path: not classified (default route), not cached.
    for _ in range(2):
        r = vane.post(chat_body(MATH), path="/v1/completions")
        assert r.status == 404, r  # the mock has no /v1/completions: it reached the upstream
        assert_untouched_response(r)
        assert r.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"
    # A body the filter would refuse (400) on its own path is not even looked at here.
    r = vane.post(b'{"model": "auto", "prompt": ', path="/v1/completions")
    assert r.status == 404 and r.json()["error"]["code"] == "unknown_url", r
    assert_untouched_response(r)
    # A longer path that merely starts with the handled one is another path.
    r = vane.post(chat_body(MATH), path=CHAT + "/extra")
    assert r.status == 404, r
    assert_untouched_response(r)


def test_get_on_the_chat_path_passes_through(vane):
    r = http_request(vane.stack.envoy_port, "GET", CHAT, None, vane.headers())
    assert r.status == 405, r  # the mock's answer
    assert_untouched_response(r)
