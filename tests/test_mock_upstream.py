"""Tests for tests/mock_upstream.py, the OpenAI-compatible mock model server."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

MOCK = Path(__file__).with_name("mock_upstream.py")
NAME = "math-model"


def start_mock(*extra: str, name: str = NAME) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(MOCK), "--port", "0", "--name", name, *extra],
        stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        stop_mock(proc)
        raise RuntimeError(f"mock upstream did not start: {line!r}")
    return proc, int(line.split()[1])


def stop_mock(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


@pytest.fixture(scope="module")
def mock():
    proc, port = start_mock("--delay", "0", "--chunk-delay", "0")
    try:
        yield port
    finally:
        stop_mock(proc)


@pytest.fixture
def port(mock):
    post(mock, "/mock/reset", {})
    return mock


@pytest.fixture
def client(port):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                         timeout=10)


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def post(port: int, path: str, obj, headers: dict | None = None):
    h = {"content-type": "application/json", **(headers or {})}
    return request(port, "POST", path, json.dumps(obj).encode(), h)


def chat_body(text: str = "what is 2+2?", **kw) -> dict:
    return {"model": "math-model", "messages": [{"role": "user", "content": text}], **kw}


def parse_sse(raw: bytes) -> list[str]:
    """The data payloads of an SSE body, in order."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        lines = block.split("\n")
        assert all(ln.startswith("data: ") for ln in lines), block
        events.append("\n".join(ln[len("data: "):] for ln in lines))
    return events


# ---- plain endpoints ---------------------------------------------------------------------


def test_models_404_and_405(port):
    resp, body = request(port, "GET", "/v1/models")
    assert resp.status == 200
    assert resp.getheader("x-mock-upstream") == NAME
    models = json.loads(body)
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [NAME]

    resp, body = request(port, "GET", "/nope")
    assert resp.status == 404
    assert resp.getheader("x-mock-upstream") == NAME
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == "unknown_url"

    resp, body = request(port, "GET", "/v1/chat/completions")
    assert resp.status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"


# ---- JSON completions --------------------------------------------------------------------


def test_json_completion_shape(port):
    resp, raw = post(port, "/v1/chat/completions", chat_body(
        "what is 2+2?", messages=[{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": "first question"},
                                  {"role": "assistant", "content": "ok"},
                                  {"role": "user", "content": "what is 2+2?"}]))
    assert resp.status == 200
    assert resp.getheader("content-type") == "application/json"
    assert resp.getheader("x-mock-upstream") == NAME
    obj = json.loads(raw)
    assert obj["id"].startswith("chatcmpl-") and len(obj["id"]) > len("chatcmpl-")
    assert obj["object"] == "chat.completion"
    assert isinstance(obj["created"], int) and abs(obj["created"] - time.time()) < 60
    assert obj["model"] == "math-model"
    [choice] = obj["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": "math-model answers: what is 2+2?"},
        "logprobs": None,
        "finish_reason": "stop",
    }
    u = obj["usage"]
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] == 5
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_model_is_echoed_and_ids_are_unique(port):
    a = json.loads(post(port, "/v1/chat/completions", chat_body(model="rewritten"))[1])
    b = json.loads(post(port, "/v1/chat/completions", chat_body(model="rewritten"))[1])
    assert a["model"] == b["model"] == "rewritten"
    assert a["id"] != b["id"]
    # ...but the answer depends on the server name, not the requested model.
    assert a["choices"][0]["message"]["content"] == "math-model answers: what is 2+2?"


def test_content_parts(port):
    body = chat_body()
    body["messages"][0]["content"] = [{"type": "text", "text": "part one"},
                                      {"type": "text", "text": "part two"}]
    obj = json.loads(post(port, "/v1/chat/completions", body)[1])
    assert obj["choices"][0]["message"]["content"] == "math-model answers: part one part two"


@pytest.mark.parametrize("body,param", [
    (b"{not json", None),
    (b"", None),
    (json.dumps({"model": "m"}).encode(), "messages"),
    (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "model"),
    (json.dumps([1, 2]).encode(), None),
])
def test_bad_requests_are_400(port, body, param):
    resp, raw = request(port, "POST", "/v1/chat/completions", body,
                        {"content-type": "application/json"})
    assert resp.status == 400
    assert resp.getheader("x-mock-upstream") == NAME
    err = json.loads(raw)["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"] and err["param"] == param


def test_chunked_request_body(port):
    """Envoy forwards a body it has rewritten with Transfer-Encoding: chunked."""
    data = json.dumps(chat_body("chunked hello")).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=iter([data[:10], data[10:]]),
                 headers={"content-type": "application/json"}, encode_chunked=True)
    resp = conn.getresponse()
    obj = json.loads(resp.read())
    conn.close()
    assert obj["choices"][0]["message"]["content"] == "math-model answers: chunked hello"


def test_keep_alive_serves_many_requests_on_one_connection(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    sock = conn.sock
    for i in range(5):
        conn.request("POST", "/v1/chat/completions", json.dumps(chat_body(f"q{i}")),
                     {"content-type": "application/json"})
        resp = conn.getresponse()
        assert json.loads(resp.read())["choices"][0]["message"]["content"].endswith(f"q{i}")
        stream = chat_body(f"s{i}", stream=True)
        conn.request("POST", "/v1/chat/completions", json.dumps(stream),
                     {"content-type": "application/json"})
        resp = conn.getresponse()
        assert parse_sse(resp.read())[-1] == "[DONE]"
        # an error must not break the connection either
        conn.request("POST", "/v1/chat/completions", b"{oops",
                     {"content-type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400
        resp.read()
    assert conn.sock is sock  # never reconnected
    conn.close()


# ---- streaming ---------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True])
def test_sse_stream_shape(port, include_usage):
    body = chat_body("stream me please", stream=True)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    resp, raw = post(port, "/v1/chat/completions", body)
    assert resp.status == 200
    assert resp.getheader("content-type").startswith("text/event-stream")
    assert resp.getheader("transfer-encoding") == "chunked"
    assert resp.getheader("content-length") is None
    assert resp.getheader("x-mock-upstream") == NAME

    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["id"].startswith("chatcmpl-") and chunks[0]["model"] == "math-model"

    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        u = usage_chunk["usage"]
        assert u["completion_tokens"] == 5
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        assert all(c["usage"] is None for c in chunks)
    else:
        assert all("usage" not in c for c in chunks)

    first, *middle, last = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["delta"]["content"] == ""
    assert len(middle) >= 3  # split per word
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"]["content"] for c in middle)
    assert text == "math-model answers: stream me please"


def test_stream_chunks_arrive_spaced_by_chunk_delay():
    proc, port = start_mock("--delay", "0.2", "--chunk-delay", "0.05", name="slow-model")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t0 = time.monotonic()
        conn.request("POST", "/v1/chat/completions",
                     json.dumps(chat_body("one two three", stream=True)),
                     {"content-type": "application/json"})
        resp = conn.getresponse()
        t_headers = time.monotonic() - t0
        first = resp.read1()
        t_first = time.monotonic() - t0
        rest = resp.read()
        t_all = time.monotonic() - t0
        conn.close()
        events = parse_sse(first + rest)
        assert events[-1] == "[DONE]"
        assert 0.2 <= t_headers < 1.0 and t_first < 0.3  # the role chunk comes with the headers
        # role, 5 words, stop, [DONE]: 7 gaps of 0.05 s after the first chunk
        assert t_all >= 0.2 + 7 * 0.05 - 0.01
    finally:
        assert stop_mock(proc) == 0


# ---- the official client -----------------------------------------------------------------


def test_openai_client_create(client):
    r = client.chat.completions.create(
        model="math-model", messages=[{"role": "user", "content": "integrate x dx"}])
    assert r.choices[0].message.content == "math-model answers: integrate x dx"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "math-model"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    raw = client.chat.completions.with_raw_response.create(
        model="x", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-mock-upstream"] == NAME
    assert raw.parse().choices[0].message.content == "math-model answers: hi"


def test_openai_client_stream(client):
    stream = client.chat.completions.create(
        model="math-model", messages=[{"role": "user", "content": "count to three"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "math-model answers: count to three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


def test_openai_client_models(client):
    assert [m.id for m in client.models.list()] == [NAME]


# ---- failure injection -------------------------------------------------------------------


def test_header_status_injection(port, client):
    resp, raw = post(port, "/v1/chat/completions", chat_body(), {"x-mock-status": "503"})
    assert resp.status == 503
    assert resp.getheader("x-mock-upstream") == NAME
    assert json.loads(raw)["error"]["type"] == "server_error"

    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "500"})
    assert e.value.status_code == 500
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "429"})
    with pytest.raises(openai.InternalServerError):  # streaming requests fail before streaming
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-mock-status": "502"})


def _raw_read_stream(port, headers=None) -> tuple[bytes, Exception | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body(stream=True)),
                 {"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    assert resp.status == 200
    got, err = b"", None
    try:
        while chunk := resp.read1():
            got += chunk
    except (http.client.IncompleteRead, ConnectionError) as e:
        err = e
    conn.close()
    return got, err


@pytest.mark.parametrize("mode", ["1", "rst"])
def test_truncated_stream(port, client, mode):
    got, err = _raw_read_stream(port, {"x-mock-truncate": mode})
    assert err is not None  # the chunked body never finished
    events = parse_sse(got) if got else []
    assert "[DONE]" not in events and len(events) <= 2

    seen = []
    with pytest.raises(openai.APIConnectionError):  # the official client notices the break
        for chunk in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                extra_headers={"x-mock-truncate": mode}):
            seen.append(chunk)
    assert len(seen) <= 2 and all(c.choices[0].finish_reason is None for c in seen)


def test_truncated_json(port, client):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body()),
                 {"content-type": "application/json", "x-mock-truncate": "1"})
    resp = conn.getresponse()
    assert resp.status == 200
    declared = int(resp.getheader("content-length"))
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    assert 0 < len(e.value.partial) < declared
    conn.close()

    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-mock-truncate": "1"})


def test_server_wide_faults_reset_and_stall(port):
    """POST /mock/fault breaks every chat request until cleared, and marks each in its record."""
    assert post(port, "/mock/fault", {"mode": "bogus"})[0].status == 400
    assert post(port, "/mock/fault", {"mode": "reset"})[0].status == 200
    got, err = _raw_read_stream(port, {})
    assert err is not None and "[DONE]" not in (parse_sse(got) if got else [])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body()), {"content-type": "application/json"})
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        conn.getresponse().read()
    conn.close()

    # A stall holds a JSON answer (nothing sent) until it is cleared, then closes.
    assert post(port, "/mock/fault", {"mode": "stall"})[0].status == 200
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body()), {"content-type": "application/json"})
    time.sleep(0.3)
    t0 = time.monotonic()
    post(port, "/mock/fault", {"mode": None})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    assert time.monotonic() - t0 < 2
    conn.close()

    resp, _ = post(port, "/v1/chat/completions", chat_body())  # cleared: answered again
    assert resp.status == 200
    faults = [r.get("fault") for r in json.loads(request(port, "GET", "/mock/requests")[1])["requests"]]
    assert faults == ["reset", "reset", "stall", None]


# ---- answers a cache must not keep -----------------------------------------------------------


def sse_blocks(raw: bytes) -> list[str]:
    """The events of an SSE body as written (``event:`` lines included)."""
    text = raw.decode()
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    return text.split("\n\n")[:-1]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [201, 203, 206])
def test_a_2xx_status_other_than_200_with_the_usual_answer(port, status, stream):
    resp, raw = post(port, "/v1/chat/completions", chat_body("hi", stream=stream), {"x-mock-status": str(status)})
    assert resp.status == status
    if stream:
        assert parse_sse(raw)[-1] == "[DONE]"
    else:
        assert json.loads(raw)["choices"][0]["message"]["content"] == "math-model answers: hi"
    resp, _ = post(port, "/v1/chat/completions", chat_body(), {"x-mock-status": "204"})
    assert resp.status == 200, "204 carries no body: not injected"


def test_finish_reason_content_and_headers_are_injected(port, client):
    r = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "one two three four five six"}],
        extra_headers={"x-mock-finish": "length", "x-mock-cache-control": "no-store",
                       "x-mock-content-type": "application/json; charset=utf-8"})
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    c = r.parse()
    assert c.choices[0].finish_reason == "length"
    assert c.choices[0].message.content == "math-model answers: one two"  # cut in half
    assert c.usage.completion_tokens == 4  # what was sent
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-mock-finish": "content_filter", "x-mock-content": "The server is overloaded."})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The server is overloaded."
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    resp, raw = post(port, "/v1/chat/completions", chat_body(stream=True), {"x-mock-cache-control": "private"})
    assert resp.getheader("cache-control") == "private", "replaces the stream's no-cache"


def test_error_events_in_a_200_stream(port):
    for kind, want in [("event", None), ("object", "error"), ("key", None), ("type", None)]:
        resp, raw = post(port, "/v1/chat/completions", chat_body("a b c", stream=True), {"x-mock-error": kind})
        assert resp.status == 200
        blocks = sse_blocks(raw)
        error = blocks[2]  # after the role chunk and the first content chunk
        if kind == "event":
            assert error.startswith("event: error\ndata: ")
            assert "error" not in json.loads(error.split("data: ", 1)[1]), "no error key"
        else:
            data = json.loads(error.removeprefix("data: "))
            assert data.get("object") == want
            assert ("error" in data) == (kind in ("key", "type"))
            assert kind != "type" or data["type"] == "error"
        finish = json.loads(blocks[-2].removeprefix("data: "))
        assert finish["choices"][0]["finish_reason"] == "stop", "the finish and [DONE] follow"


def test_error_bodies_with_200(port):
    resp, raw = post(port, "/v1/chat/completions", chat_body(), {"x-mock-error": "object"})
    assert resp.status == 200 and json.loads(raw)["object"] == "error"
    resp, raw = post(port, "/v1/chat/completions", chat_body(), {"x-mock-error": "key"})
    assert resp.status == 200 and json.loads(raw)["error"]["type"] == "server_error"


# ---- delay and recording -----------------------------------------------------------------


def test_delay_header(port):
    t0 = time.monotonic()
    resp, _ = post(port, "/v1/chat/completions", chat_body(), {"x-mock-delay": "0.3"})
    assert resp.status == 200 and time.monotonic() - t0 >= 0.3


def test_requests_are_recorded(port):
    post(port, "/v1/chat/completions", chat_body("first"), {"X-Vane-Route": "math"})
    request(port, "POST", "/v1/chat/completions?x=1", b"{bad", {"content-type": "text/plain"})
    request(port, "GET", "/v1/models")  # not a chat request: not recorded
    recorded = json.loads(request(port, "GET", "/mock/requests")[1])["requests"]
    assert len(recorded) == 2
    a, b = recorded
    assert a["path"] == "/v1/chat/completions"
    assert a["headers"]["x-vane-route"] == "math"
    assert a["headers"]["content-type"] == "application/json"
    assert all(k == k.lower() for k in a["headers"])
    assert a["body"] == chat_body("first")
    assert b["path"] == "/v1/chat/completions?x=1"
    assert b["body"] is None and b["body_text"] == "{bad"

    post(port, "/mock/reset", {})
    assert json.loads(request(port, "GET", "/mock/requests")[1]) == {"requests": []}


# ---- process behaviour and speed ---------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_cleanly_on_signal(sig):
    proc, port = start_mock("--delay", "0")
    # with an idle keep-alive connection open, which must not hold up the exit
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/models")
    conn.getresponse().read()
    os.kill(proc.pid, sig)
    try:
        assert proc.wait(timeout=5) == 0
    finally:
        conn.close()
        stop_mock(proc)


def test_keep_alive_latency_is_low(port):
    """Guards TCP_NODELAY. A JSON answer goes out in one write, but a stream is many writes, and
    without TCP_NODELAY each one after the first waits ~40 ms for the client's delayed ACK."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for stream in (False, True):
        body = json.dumps(chat_body("one two three", stream=stream))
        times = []
        for _ in range(40):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body,
                         {"content-type": "application/json"})
            conn.getresponse().read()
            times.append(time.perf_counter() - t0)
        assert statistics.median(times[5:]) < 0.02, (stream, statistics.median(times[5:]))
    conn.close()


def test_port_in_use_fails_loudly(port):
    proc = subprocess.Popen([sys.executable, str(MOCK), "--port", str(port), "--name", "x"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        stop_mock(proc)
    assert proc.returncode != 0 and b"Address already in use" in err

