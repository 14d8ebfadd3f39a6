"""Bodies and headers the filter must refuse cleanly (OpenAI-format 400 / 413) or survive
(raw non-UTF-8 header bytes), without crashing the wasm VM."""
from __future__ import annotations

import json

import pytest

from helpers import CHAT, chat_body, http_request, routed_to_math

MATH = "Solve 2x + 5 = 17 for x."


def assert_openai_error(r, status: int, *, message_has: str = "", param=None, code=None):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    assert r.header("x-mock-upstream") is None, r  # answered by the filter
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == "invalid_request_error", err
    assert set(err) == {"message", "type", "param", "code"}, err
    assert message_has in err["message"], err
    assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.parametrize("raw,message_has,param", [
    (b'{"model": "auto", "messages": [', "not valid JSON", None),
    (b"not json at all", "not valid JSON", None),
    (b'[{"model": "auto"}]', "JSON object", None),
    (b'{"model": "auto"}', "messages", "messages"),
    (b'{"model": "auto", "messages": []}', "must not be empty", "messages"),
    (b'{"model": "auto", "messages": "hi"}', "array", "messages"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "model"),
    (b'{"model": "auto", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}', "stream", "stream"),
    (b'{"model": "auto", "messages": [{"content": "hi"}]}', "role", "messages"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 5}]}', "content", "messages"),
    ('{"model": "auto", "messages": [{"role": "user", "content": "caf\u00e9"}]}'.encode("latin-1"),
     "not valid JSON", None),  # invalid UTF-8 (a lone 0xE9 byte)
    (b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe\xfd"}]}', "not valid JSON", None),
], ids=["truncated_json", "not_json", "array", "missing_messages", "empty_messages", "messages_not_array",
        "missing_model", "stream_not_bool", "message_without_role", "content_not_text",
        "invalid_utf8_latin1", "invalid_utf8_bytes"])
def test_bad_body_is_a_400_openai_error(vane, raw, message_has, param):
    r = vane.post(raw)
    assert_openai_error(r, 400, message_has=message_has, param=param, code="invalid_request")
    assert vane.upstream_count() == 0
    ok = vane.chat(MATH)  # the VM is still there and still routing
    assert ok.status == 200 and ok.header("x-vane-model") == "math-model", ok


def test_empty_body_is_a_400(vane):
    r = http_request(vane.stack.envoy_port, "POST", CHAT, b"", vane.headers())
    assert_openai_error(r, 400, message_has="empty")
    r = http_request(vane.stack.envoy_port, "POST", CHAT, None, vane.headers())  # no body at all
    assert_openai_error(r, 400, message_has="empty")
    assert vane.upstream_count() == 0


def big_body(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes."""
    base = json.dumps(chat_body("")).encode()
    filler = size - len(base)
    body = json.dumps(chat_body("x" * filler)).encode()
    assert len(body) == size
    return body


def test_body_over_the_default_limit_is_a_413(vane):
    r = vane.post(big_body(2 << 20))  # 2 MiB > 1 MiB, declared by content-length
    err = assert_openai_error(r, 413, message_has=str(1 << 20), code="request_too_large")
    assert "larger than" in err["message"]
    r = vane.post(big_body(2 << 20), chunked=True)  # no content-length: found while buffering
    assert_openai_error(r, 413, code="request_too_large")
    assert vane.upstream_count() == 0
    ok = vane.chat(MATH)
    assert ok.status == 200 and ok.header("x-vane-model") == "math-model", ok


def test_max_body_bytes_boundary(make_stack):
    v = make_stack(filter_config={"max_body_bytes": 1024})
    no_cache = {"x-vane-cache-control": "no-cache"}  # both sizes must reach the upstream
    for chunked in (False, True):
        v.reset_upstreams()
        r = v.post(big_body(1024), no_cache, chunked=chunked)  # exactly at the limit: fine
        assert r.status == 200 and r.cache == "bypass", (chunked, r)
        assert r.header("x-vane-model") == r.header("x-mock-upstream") is not None, (chunked, r)  # routed
        assert v.upstream_count() == 1
        r = v.post(big_body(1025), no_cache, chunked=chunked)
        assert_openai_error(r, 413, message_has="1024", code="request_too_large")
        assert v.upstream_count() == 1
    ok = v.chat(MATH)
    assert ok.status == 200 and ok.header("x-vane-model") == "math-model", ok


@pytest.mark.parametrize("header", ["authorization", "api-key", "x-vane-cache-control", "x-request-id",
                                    "content-type"])
def test_non_utf8_header_bytes_are_harmless(vane, header):
    value = b"Bearer \xff\xfe" + vane.api_key.encode()
    if header == "content-type":
        value = b"application/json; charset=\xff\xfe"
    headers = vane.headers([(header, value)], auth=header != "authorization")
    sent = chat_body(MATH)
    r = http_request(vane.stack.envoy_port, "POST", CHAT, json.dumps(sent).encode(), headers)
    assert r.status == 200, r
    assert r.header("x-vane-model") == "math-model", r
    assert r.cache == "miss", r
    name, got = vane.only_upstream_request()
    assert name == "math-model" and got["body"] == routed_to_math(sent)
    ok = vane.chat("Who was the first emperor of Rome?")
    assert ok.status == 200 and ok.header("x-vane-model") == "general-model", ok


def test_non_utf8_credential_is_a_tenant_of_its_own(vane):
    key = b"sk-\xff\xfe-" + vane.api_key.encode()
    first = vane.chat_stored(MATH, api_key=key)
    r = vane.chat(MATH, api_key=key)  # the same raw bytes: the same tenant
    assert r.cache == "hit" and r.body == first.body, r


def test_credentials_differing_only_in_invalid_bytes_are_different_tenants(vane):
    key = vane.api_key.encode()
    vane.chat_stored(MATH, api_key=key + b"-\xff\xfe")
    r = vane.chat(MATH, api_key=key + b"-\xfe\xff")  # another credential
    assert r.status == 200, r
    assert r.cache == "miss", r
