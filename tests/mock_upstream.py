#!/usr/bin/env python3
"""An OpenAI-compatible mock model server for the end-to-end tests and the local demo.

Standard library only. One process plays one named upstream model on 127.0.0.1 (``--host
0.0.0.0`` in its container image, deploy/images/mock-model):

    python tests/mock_upstream.py --port 8811 --name math-model [--delay 1.0] [--chunk-delay 0.02]

Once listening it prints exactly one line, ``ready <port>``, to stdout (``--port 0`` picks a
free port and prints the real one). SIGTERM / SIGINT stop it cleanly (exit status 0).

Endpoints
  POST /v1/chat/completions  OpenAI chat completions, JSON or SSE (``"stream": true``, with a
                             usage chunk for ``stream_options.include_usage``). The answer is
                             ``"<name> answers: <last user message>"``; ``model`` echoes the
                             request's. A body that is not a chat request gets a 400.
  GET  /v1/models            the one model this instance serves (its ``--name``).
  GET  /mock/requests        ``{"requests": [...]}``: every chat request received, in order, as
                             ``{"path", "headers", "body"}`` (headers lowercased; body the parsed
                             JSON, or null plus ``body_text`` when it did not parse).
  POST /mock/reset           forget the recorded requests.
  POST /mock/fault           ``{"mode": "reset" | "stall" | null}``: a fault of the whole server
                             for every chat request that arrives while it is set (the fault
                             suite, tests/e2e/test_faults.py). ``reset``: as ``x-mock-truncate:
                             rst`` (a stream's first two chunks, a JSON answer's first half, then
                             a TCP reset). ``stall``: a stream sends its first two chunks, a JSON
                             answer nothing, then it waits until the fault is cleared (or
                             ``"stall_max"`` seconds, default 30) and closes without the rest.
                             ``null`` clears it. Each faulted request's record says
                             ``"fault": <mode>``, so a test can tell the failures the upstream
                             made from any others.
Errors (unknown path 404, wrong method 405, 400, injected) are OpenAI error bodies, and every
response carries ``x-mock-upstream: <name>``.

Failures are injected by request headers on a chat request, and only so:
  x-mock-status: <4xx|5xx>   answer with that status and an OpenAI error body.
  x-mock-status: <2xx>       the usual answer (JSON or SSE) with that status instead of 200
                             (203, 206, ...; not 204/205, which carry no body).
  x-mock-truncate: 1 | rst   break the response: a stream sends its first two chunks and closes
                             without the rest or ``[DONE]``; a JSON answer declares its whole
                             Content-Length, sends half and closes. ``rst`` closes with a TCP
                             reset instead of a FIN.
  x-mock-delay: <seconds>    overrides ``--delay`` (the wait before the response, errors too).
The answers that look fine and are not (a 200 that a cache must not keep):
  x-mock-finish: <reason>    the finish_reason (``length``: the answer cut to its first half, as
                             ``max_tokens`` cuts it; ``content_filter``, ...).
  x-mock-content: <text>     the assistant's text instead of the usual one (e.g. "The server is
                             overloaded. Please try again later.").
  x-mock-cache-control: <v>  the response's Cache-Control (a stream's is otherwise ``no-cache``).
  x-mock-content-type: <v>   the response's Content-Type.
  x-mock-error: <kind>       an error in a 200 answer. A stream sends its first content chunk,
                             then the error, then the rest, the finish and ``[DONE]``: ``event``
                             (``event: error`` with a data object that has no ``error`` key),
                             ``object`` (vLLM's ``{"object": "error", ...}``), ``key`` (an
                             ``{"error": {...}}`` event), ``type`` (``{"type": "error", ...}``).
                             A JSON answer is that error body itself (``object``: vLLM's, else
                             OpenAI's ``{"error": {...}}``).
"""

from __future__ import annotations

import argparse
import email.utils
import http
import json
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"
ROUTES = {CHAT_PATH: "POST", "/v1/models": "GET", "/mock/requests": "GET", "/mock/reset": "POST", "/mock/fault": "POST"}
FAULTS = ("reset", "stall")
WORDS = re.compile(r"\S+\s*|\s+")  # one SSE chunk per word


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error object; ``type`` as the API names it for that status."""
    types = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
    type_ = "server_error" if status >= 500 else types.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def message_text(content) -> str:
    """The text of a message's ``content``: a string, or a list of parts (text parts joined)."""
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def chat_problem(body) -> tuple[str, str | None] | None:
    """(message, param) for a body that is not a chat request; None if it is one."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a non-empty array of message objects.", "messages"
    return None


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default (5) drops SYNs under a burst of new connections

    def __init__(self, port: int, *, name: str, delay: float, chunk_delay: float, host: str = "127.0.0.1") -> None:
        self.name, self.delay, self.chunk_delay = name, delay, chunk_delay
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        # The server-wide fault (POST /mock/fault); `unstalled` is set whenever no stall is on.
        self.fault: str | None = None
        self.stall_max = 30.0
        self.unstalled = threading.Event()
        self.unstalled.set()
        super().__init__((host, port), Handler)

    def set_fault(self, mode: str | None, stall_max: float = 30.0) -> None:
        with self.lock:
            self.fault, self.stall_max = mode, stall_max
            if mode == "stall":
                self.unstalled.clear()
            else:
                self.unstalled.set()

    def get_request(self):
        sock, addr = super().get_request()
        # Without this each write of a stream after the first waits ~40 ms for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MockServer
    _reset_on_close = False

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        pass

    # ---- responses ------------------------------------------------------------------------

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
                 f"date: {email.utils.formatdate(usegmt=True)}",
                 f"x-mock-upstream: {self.server.name}", *(f"{k}: {v}" for k, v in headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(self, status: int, obj, extra_headers: list[tuple[str, str]] = ()) -> None:
        """``extra_headers`` (cache-control, content-type) replace the defaults of the same name."""
        body = json.dumps(obj).encode()
        names = {k for k, _ in extra_headers}
        headers = [h for h in [("content-type", "application/json")] if h[0] not in names]
        # Head and body in one write: one segment for small answers.
        self.wfile.write(self._head(status, [*headers, *extra_headers, ("content-length", str(len(body)))]) + body)

    def _error(self, status: int, message: str, **kw) -> None:
        self._send_json(status, error_body(status, message, **kw))

    def _abort(self, how: str) -> None:
        """Ends the connection without finishing the response: FIN, or RST for 'rst'."""
        self.close_connection = True
        try:
            if how == "rst":
                # Linger 0: the close in finish() sends a reset instead of a FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._reset_on_close = True
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        super().finish()
        if self._reset_on_close:
            # The makefile() objects are closed now, so this is the socket's real close (RST).
            self.connection.close()

    # ---- dispatch -------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():  # what Envoy may send
            out = bytearray()
            while size := int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # the CRLF after the chunk data
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return bytes(out)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _dispatch(self) -> None:
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            return self._error(400, "Malformed request body framing.")
        path = urlsplit(self.path).path
        if path not in ROUTES:
            return self._error(404, f"Invalid URL ({self.command} {path})", code="unknown_url")
        if self.command != ROUTES[path]:
            return self._error(405, f"Method {self.command} not allowed on {path}.", code="method_not_allowed")
        if path == CHAT_PATH:
            return self._chat(raw)
        if path == "/v1/models":
            return self._send_json(200, {"object": "list", "data": [
                {"id": self.server.name, "object": "model", "created": 1700000000, "owned_by": "vane-mock"}]})
        if path == "/mock/fault":
            try:
                want = json.loads(raw or b"{}")
                mode = want.get("mode")
                stall_max = float(want.get("stall_max", 30.0))
            except (ValueError, AttributeError, TypeError):
                return self._error(400, "Expected {\"mode\": \"reset\" | \"stall\" | null}.")
            if mode is not None and mode not in FAULTS:
                return self._error(400, f"Unknown fault {mode!r}; one of {FAULTS} or null.", param="mode")
            self.server.set_fault(mode, stall_max)
            return self._send_json(200, {"mode": mode})
        with self.server.lock:
            if path == "/mock/reset":
                self.server.requests.clear()
                return self._send_json(200, {"ok": True})
            return self._send_json(200, {"requests": list(self.server.requests)})

    do_GET = do_POST = _dispatch  # noqa: N815

    # ---- chat completions -----------------------------------------------------------------

    def _chat(self, raw: bytes) -> None:
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        entry = {"path": self.path, "headers": headers, "body": None}
        try:
            entry["body"] = body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
            entry["body_text"] = raw.decode("utf-8", "replace")
        with self.server.lock:
            fault, stall_max = self.server.fault, self.server.stall_max
            if fault:
                entry["fault"] = fault
            self.server.requests.append(json.loads(json.dumps(entry)))

        try:
            delay = max(float(headers.get("x-mock-delay", self.server.delay)), 0.0)
        except ValueError:
            delay = self.server.delay
        status = headers.get("x-mock-status", "").strip()
        if status.isdigit() and 400 <= int(status) <= 599:  # before validation, after the delay
            time.sleep(delay)
            return self._error(int(status), f"Injected failure from mock upstream '{self.server.name}' "
                                            f"(status {status}).")
        status = int(status) if status.isdigit() and 200 <= int(status) <= 299 and int(status) not in (204, 205) else 200
        if "body_text" in entry:
            return self._error(400, "We could not parse the JSON body of your request. (HINT: This likely "
                                    "means you aren't using your HTTP library correctly. The OpenAI API "
                                    "expects a JSON payload, but what was sent was not valid JSON.)",
                               code="invalid_json")
        if problem := chat_problem(body):
            return self._error(400, problem[0], param=problem[1])

        truncate = headers.get("x-mock-truncate", "").strip().lower()
        truncate = truncate if truncate in ("1", "rst") else None
        if fault == "reset":
            truncate = "rst"
        elif fault == "stall":
            truncate = "stall"
        finish = headers.get("x-mock-finish", "").strip() or "stop"
        error = headers.get("x-mock-error", "").strip().lower() or None
        extra_headers = [(k, headers[f"x-mock-{k}"]) for k in ("cache-control", "content-type") if f"x-mock-{k}" in headers]
        time.sleep(delay)
        last_user = [m for m in body["messages"] if m.get("role") == "user"] or body["messages"][-1:]
        content = headers.get("x-mock-content") or \
            f"{self.server.name} answers: {message_text(last_user[-1].get('content'))}"
        if finish == "length":  # cut where max_tokens would have cut it
            words = WORDS.findall(content)
            content = "".join(words[:max(len(words) // 2, 1)]).rstrip()
        prompt_tokens = sum(len(message_text(m.get("content")).split()) + 3 for m in body["messages"])
        completion_tokens = len(content.split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": body["model"]}
        if body.get("stream"):
            self._stream(base, content, usage if (body.get("stream_options") or {}).get("include_usage") else None,
                         truncate, status=status, finish=finish, error=error, extra_headers=extra_headers)
            return
        answer = {**base, "object": "chat.completion", "usage": usage, "choices": [{
            "index": 0, "message": {"role": "assistant", "content": content},
            "logprobs": None, "finish_reason": finish}]}
        if error:
            answer = self._error_object("object" if error == "object" else "key")
        if not truncate:
            return self._send_json(status, answer, extra_headers)
        if truncate == "stall":  # nothing at all until the stall ends, then a close
            self.server.unstalled.wait(stall_max)
            return self._abort("1")
        data = json.dumps(answer).encode()  # promise the whole body, send half of it, then close
        self.wfile.write(self._head(status, [("content-type", "application/json"),
                                             ("content-length", str(len(data)))]) + data[:len(data) // 2])
        self._abort(truncate)

    def _error_object(self, kind: str) -> dict:
        """An error as a 200 body or stream event carries it (see x-mock-error)."""
        message = f"Injected error from mock upstream '{self.server.name}': the model is overloaded."
        if kind == "object":  # vLLM's ErrorResponse
            return {"object": "error", "message": message, "type": "ServiceUnavailableError", "param": None,
                    "code": 503}
        if kind == "type":  # Anthropic-style event
            return {"type": "error", "error": {"type": "overloaded_error", "message": message}}
        if kind == "event":  # the data of an `event: error`: no `error` key
            return {"message": message, "code": 503}
        return error_body(503, message)

    def _stream(self, base: dict, content: str, usage: dict | None, truncate: str | None, *, status: int = 200,
                finish: str = "stop", error: str | None = None, extra_headers: list[tuple[str, str]] = ()) -> None:
        def event(delta: dict | None, finish=None, **extra) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            obj = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            if usage is not None:
                obj.setdefault("usage", None)  # as OpenAI: null on every chunk but the last
            return frame(b"data: " + json.dumps(obj).encode() + b"\n\n")

        def frame(data: bytes) -> bytes:  # one HTTP/1.1 chunk
            return b"%x\r\n%s\r\n" % (len(data), data)

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": word}) for word in WORDS.findall(content)]
        if error:  # after the first content chunk, the rest still follows
            name = b"event: error\n" if error == "event" else b""
            events.insert(2, frame(name + b"data: " + json.dumps(self._error_object(error)).encode() + b"\n\n"))
        events.append(event({}, finish))
        if usage is not None:
            events.append(event(None, usage=usage))
        events.append(frame(b"data: [DONE]\n\n"))
        if truncate:
            events = events[:2]  # the role chunk and the first content chunk, then nothing
        defaults = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
        names = {k for k, _ in extra_headers}
        head = self._head(status, [*(h for h in defaults if h[0] not in names), *extra_headers,
                                   ("transfer-encoding", "chunked")])
        try:
            self.wfile.write(head + events[0])
            for ev in events[1:]:
                time.sleep(self.server.chunk_delay)
                self.wfile.write(ev)
            if truncate == "stall":  # the first chunks, then silence until the stall ends
                self.wfile.flush()
                self.server.unstalled.wait(self.server.stall_max)
                return self._abort("1")
            if truncate:
                return self._abort(truncate)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--name", required=True, help="the model this instance plays")
    ap.add_argument("--delay", type=float, default=1.0,
                    help="seconds before each chat response starts (x-mock-delay overrides)")
    ap.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between SSE chunks")
    args = ap.parse_args(argv)

    server = MockServer(args.port, name=args.name, delay=args.delay, chunk_delay=args.chunk_delay, host=args.host)

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so it must not run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
