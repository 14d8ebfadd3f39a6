#!/usr/bin/env python3
"""An OpenAI-compatible mock model server for the end-to-end tests and the local demo.

Standard library only. One process plays one named upstream model:

    python tests/mock_upstream.py --port 8811 --name math-model [--host 127.0.0.1]
                                  [--delay 1.0] [--chunk-delay 0.02] [--verbose]

Once listening it prints exactly one line, ``ready <port>``, to stdout (``--port 0`` picks a
free port and prints the real one). SIGTERM / SIGINT stop it cleanly (exit status 0).

Endpoints
  POST /v1/chat/completions  OpenAI chat completions, JSON or SSE (``"stream": true``). The
                             answer is deterministic: ``"<name> answers: <last user message>"``,
                             and ``model`` echoes the request body's ``model``.
  GET  /v1/models            the one model this instance serves (its ``--name``).
  GET  /healthz              200 ``ok``.
  GET  /mock/requests        ``{"requests": [...]}``: every chat request received, in order, as
                             ``{"seq", "time", "method", "path", "headers", "body", "injected"}``
                             (headers lowercased; body the parsed JSON, or null plus
                             ``body_text`` when it did not parse).
  POST /mock/reset           forget the recorded requests and any pending failures.
  POST /mock/fail            ``{"status": 500, "count": 1}`` or ``{"truncate": true, "count": 1}``:
                             the next ``count`` chat requests fail that way.
  GET  /mock/fail            the pending failures.

Every response carries ``x-mock-upstream: <name>``.

Per-request controls (request headers on a chat request)
  x-mock-delay: <seconds>    overrides ``--delay`` (the wait before the response starts).
  x-mock-status: <4xx|5xx>   answer with that status and an OpenAI error body.
  x-mock-truncate: 1         break the response: a stream sends its first chunks then closes
                             without the last chunk / ``[DONE]``; a JSON answer declares a
                             Content-Length larger than what is sent, then closes. ``rst``
                             instead of ``1`` closes with a TCP reset instead of a FIN.

Failure injection happens before request validation; injected failures and truncations are
recorded (``injected``) like any other request.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
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

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}

# OpenAI's error "type" per status (what the official client and real tooling expect to see).
_ERROR_TYPES = {
    400: ("invalid_request_error", None), 401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None), 404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"), 422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}

_WORD_RE = re.compile(r"\S+\s*|\s+")


def error_body(message: str, status: int, *, type_: str | None = None, code: str | None = None,
               param: str | None = None) -> dict:
    default_type, default_code = _ERROR_TYPES.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None))
    return {"error": {"message": message, "type": type_ or default_type, "param": param,
                      "code": code if code is not None else default_code}}


def message_text(content) -> str:
    """The text of a message's ``content``: a string, or a list of parts (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    return str(content)


def last_user_text(messages: list) -> str:
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return message_text(msg.get("content"))
    # No user turn at all: fall back to the last message of any role.
    last = messages[-1]
    return message_text(last.get("content")) if isinstance(last, dict) else ""


def count_tokens(text: str) -> int:
    """A rough token count: whitespace-separated words."""
    return len(text.split())


def validate_chat(body) -> tuple[str, str | None, str | None] | None:
    """Returns (message, param, code) for an invalid chat request body, or None if it is fine."""
    if not isinstance(body, dict):
        return ("The request body must be a JSON object.", None, "invalid_request_body")
    model = body.get("model")
    if model is None:
        return ("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        return ("'model' must be a non-empty string.", "model", "invalid_type")
    messages = body.get("messages")
    if messages is None:
        return ("Missing required parameter: 'messages'.", "messages",
                "missing_required_parameter")
    if not isinstance(messages, list):
        return ("Invalid type for 'messages': expected an array.", "messages", "invalid_type")
    if not messages:
        return ("Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.", "messages", "empty_array")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return (f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]",
                    "invalid_type")
        if not isinstance(msg.get("role"), str):
            return (f"Missing required parameter: 'messages[{i}].role'.", f"messages[{i}].role",
                    "missing_required_parameter")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        return ("Invalid 'n': expected an integer between 1 and 128.", "n", "invalid_value")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        return ("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        return ("Invalid type for 'stream_options': expected an object.", "stream_options",
                "invalid_type")
    return None


class MockState:
    """Recorded requests and pending failures, shared by all handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.pending: list[dict] = []  # [{"status": int|None, "truncate": str|None, "count": int}]
        self.seq = 0

    def record(self, entry: dict, injected_header: dict | None) -> dict | None:
        """Records a chat request; returns the failure to inject into it, if any."""
        with self.lock:
            injected = injected_header
            if injected is None and self.pending:
                head = self.pending[0]
                injected = {k: head[k] for k in ("status", "truncate") if head.get(k)}
                head["count"] -= 1
                if head["count"] <= 0:
                    self.pending.pop(0)
            self.seq += 1
            entry["seq"] = self.seq
            entry["injected"] = injected
            self.requests.append(entry)
            return injected

    def snapshot(self) -> list[dict]:
        with self.lock:
            return json.loads(json.dumps(self.requests))

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.pending.clear()

    def add_failure(self, failure: dict) -> list[dict]:
        with self.lock:
            self.pending.append(failure)
            return [dict(f) for f in self.pending]

    def failures(self) -> list[dict]:
        with self.lock:
            return [dict(f) for f in self.pending]


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default (5) drops SYNs under a burst of new connections

    def __init__(self, addr, handler, *, name: str, delay: float, chunk_delay: float,
                 verbose: bool) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.name = name
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.verbose = verbose
        self.state = MockState()
        self.fingerprint = "fp_" + hashlib.sha1(name.encode()).hexdigest()[:10]
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        # Without this a response written as headers + body costs a delayed-ACK round (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vane-mock-upstream/1.0"
    sys_version = ""
    server: MockServer

    # ---- plumbing -------------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        if self.server.verbose:
            sys.stderr.write("%s [%s] %s\n" % (self.server.name, self.log_date_time_string(),
                                               format % args))

    def _status_line_and_headers(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        self.log_request(status)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                 f"date: {email.utils.formatdate(usegmt=True)}",
                 f"server: {self.server_version}",
                 f"x-mock-upstream: {self.server.name}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, body: bytes, content_type: str,
              extra: list[tuple[str, str]] | None = None) -> None:
        """A complete response in one write (one segment for small bodies)."""
        head = self._status_line_and_headers(
            status, [("content-type", content_type), ("content-length", str(len(body)))]
            + (extra or []))
        self.wfile.write(head + body)

    def _send_json(self, status: int, obj, extra: list[tuple[str, str]] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def _send_error_json(self, status: int, message: str, **kw) -> None:
        self._send_json(status, error_body(message, status, **kw))

    def _read_body(self) -> bytes:
        te = self.headers.get("transfer-encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionError("eof in chunked request body")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers (usually none), up to the empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # the CRLF after the chunk data
        length = self.headers.get("content-length")
        if length:
            return self.rfile.read(int(length))
        return b""

    def _route(self) -> str:
        return urlsplit(self.path).path

    # ---- dispatch -------------------------------------------------------------------------

    def do_GET(self):  # noqa: N802
        path = self._route()
        if path == "/healthz":
            self._send(200, b"ok", "text/plain; charset=utf-8")
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [self._model_card()]})
        elif path == f"/v1/models/{self.server.name}":
            self._send_json(200, self._model_card())
        elif path == "/mock/requests":
            self._send_json(200, {"requests": self.server.state.snapshot()})
        elif path == "/mock/fail":
            self._send_json(200, {"pending": self.server.state.failures()})
        elif path in (CHAT_PATH, "/mock/reset"):
            self._send_error_json(405, f"Method GET not allowed on {path}.",
                                  type_="invalid_request_error", code="method_not_allowed")
        else:
            self._not_found(path)

    def do_POST(self):  # noqa: N802
        path = self._route()
        try:
            raw = self._read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            self._send_error_json(400, "Malformed request body framing.")
            return
        if path == CHAT_PATH:
            self._chat(raw)
        elif path == "/mock/reset":
            self.server.state.reset()
            self._send_json(200, {"ok": True})
        elif path == "/mock/fail":
            self._mock_fail(raw)
        elif path in ("/healthz", "/v1/models", "/mock/requests"):
            self._send_error_json(405, f"Method POST not allowed on {path}.",
                                  type_="invalid_request_error", code="method_not_allowed")
        else:
            self._not_found(path)

    def _other_method(self):
        try:
            self._read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
        path = self._route()
        if path in (CHAT_PATH, "/healthz", "/v1/models", "/mock/requests", "/mock/reset",
                    "/mock/fail"):
            self._send_error_json(405, f"Method {self.command} not allowed on {path}.",
                                  code="method_not_allowed")
        else:
            self._not_found(path)

    do_PUT = do_DELETE = do_PATCH = _other_method  # noqa: N815

    def _not_found(self, path: str) -> None:
        self._send_error_json(404, f"Invalid URL ({self.command} {path})",
                              type_="invalid_request_error", code="unknown_url")

    def _model_card(self) -> dict:
        return {"id": self.server.name, "object": "model", "created": 1700000000,
                "owned_by": "vane-mock"}

    # ---- /mock/fail -----------------------------------------------------------------------

    def _mock_fail(self, raw: bytes) -> None:
        try:
            spec = json.loads(raw or b"{}")
        except ValueError:
            self._send_error_json(400, "We could not parse the JSON body of your request.",
                                  code="invalid_json")
            return
        if not isinstance(spec, dict):
            self._send_error_json(400, "Expected a JSON object.")
            return
        count = spec.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            self._send_error_json(400, "'count' must be a positive integer.", param="count")
            return
        truncate = spec.get("truncate")
        failure: dict = {"count": count}
        if truncate:
            failure["truncate"] = "rst" if truncate == "rst" else "1"
        else:
            status = spec.get("status", 500)
            if isinstance(status, bool) or not isinstance(status, int) \
                    or not 400 <= status <= 599:
                self._send_error_json(400, "'status' must be an integer 400..599.",
                                      param="status")
                return
            failure["status"] = status
        self._send_json(200, {"ok": True, "pending": self.server.state.add_failure(failure)})

    # ---- chat completions -----------------------------------------------------------------

    def _header_injection(self) -> dict | None:
        trunc = (self.headers.get("x-mock-truncate") or "").strip().lower()
        if trunc and trunc not in ("0", "false", "no"):
            return {"truncate": "rst" if trunc == "rst" else "1"}
        status = self.headers.get("x-mock-status")
        if status:
            try:
                code = int(status.strip())
            except ValueError:
                return None
            if 400 <= code <= 599:
                return {"status": code}
        return None

    def _delay(self) -> float:
        value = self.headers.get("x-mock-delay")
        if value is not None:
            try:
                d = float(value)
                if d >= 0:
                    return d
            except ValueError:
                pass
        return self.server.delay

    def _chat(self, raw: bytes) -> None:
        body = None
        body_text = None
        try:
            body = json.loads(raw)
            parse_error = None
        except (ValueError, UnicodeDecodeError) as e:
            parse_error = e
            body_text = raw.decode("utf-8", "replace")
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": self._headers_dict(),
            "body": body,
        }
        if body_text is not None:
            entry["body_text"] = body_text
        injected = self.server.state.record(entry, self._header_injection())

        if injected and injected.get("status"):
            self._sleep(self._delay())
            status = injected["status"]
            self._send_error_json(status, f"Injected failure from mock upstream "
                                          f"'{self.server.name}' (status {status}).")
            return

        if parse_error is not None:
            self._send_error_json(
                400, "We could not parse the JSON body of your request. (HINT: This likely "
                     "means you aren't using your HTTP library correctly. The OpenAI API "
                     "expects a JSON payload, but what was sent was not valid JSON.)",
                code="invalid_json")
            return
        problem = validate_chat(body)
        if problem:
            message, param, code = problem
            self._send_error_json(400, message, param=param, code=code)
            return

        truncate = injected.get("truncate") if injected else None
        self._sleep(self._delay())
        if body.get("stream"):
            self._chat_stream(body, truncate)
        else:
            self._chat_json(body, truncate)

    def _headers_dict(self) -> dict:
        out: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    @staticmethod
    def _sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _answer(self, body: dict) -> tuple[str, int]:
        content = f"{self.server.name} answers: {last_user_text(body['messages'])}"
        prompt_tokens = sum(
            count_tokens(message_text(m.get("content"))) + 3 for m in body["messages"])
        return content, prompt_tokens

    def _chat_json(self, body: dict, truncate: str | None) -> None:
        content, prompt_tokens = self._answer(body)
        n = body.get("n") or 1
        completion_tokens = count_tokens(content) * n
        obj = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": None,
                            "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            } for i in range(n)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "service_tier": "default",
            "system_fingerprint": self.server.fingerprint,
        }
        data = json.dumps(obj).encode()
        extra = [("x-request-id", "req_" + secrets.token_hex(8))]
        if not truncate:
            self._send(200, data, "application/json", extra)
            return
        # Promise the whole body, send about half of it, then close.
        head = self._status_line_and_headers(
            200, [("content-type", "application/json"), ("content-length", str(len(data)))]
            + extra)
        self.wfile.write(head + data[: len(data) // 2])
        self._abort(truncate)

    def _abort(self, how: str) -> None:
        """Ends the connection without finishing the response: FIN, or RST for 'rst'."""
        self.close_connection = True
        try:
            if how == "rst":
                # Linger 0: the close in finish() sends a reset instead of a FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self._reset_on_close = True
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    _reset_on_close = False

    def finish(self) -> None:
        super().finish()
        if self._reset_on_close:
            # The makefile() objects are closed now, so this is the socket's real close (RST);
            # the server's own shutdown(SHUT_WR) afterwards fails quietly instead of sending FIN.
            self.connection.close()

    def _chat_stream(self, body: dict, truncate: str | None) -> None:
        content, prompt_tokens = self._answer(body)
        n = body.get("n") or 1
        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage"))
        base = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": self.server.fingerprint,
        }

        def chunk(choices: list, **extra) -> bytes:
            obj = dict(base, choices=choices, **extra)
            if include_usage and "usage" not in extra:
                obj["usage"] = None
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        def choice(i: int, delta: dict, finish=None) -> dict:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

        pieces = _WORD_RE.findall(content)
        events = [chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})
                         for i in range(n)])]
        events += [chunk([choice(i, {"content": p}) for i in range(n)]) for p in pieces]
        events.append(chunk([choice(i, {}, "stop") for i in range(n)]))
        if include_usage:
            completion_tokens = count_tokens(content) * n
            events.append(chunk([], usage={
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}))
        events.append(b"data: [DONE]\n\n")

        chunked = self.request_version == "HTTP/1.1"
        if not chunked:  # HTTP/1.0 client: delimit the body by closing the connection.
            self.close_connection = True
        headers = [("content-type", "text/event-stream; charset=utf-8"),
                   ("cache-control", "no-cache"),
                   ("x-request-id", "req_" + secrets.token_hex(8))]
        if chunked:
            headers.append(("transfer-encoding", "chunked"))
        head = self._status_line_and_headers(200, headers)

        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

        if truncate:
            events = events[:2]  # the role chunk and the first content chunk, then nothing
        try:
            self.wfile.write(head + frame(events[0]))
            for ev in events[1:]:
                self._sleep(self.server.chunk_delay)
                self.wfile.write(frame(ev))
            if truncate:
                self._abort(truncate)
                return
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--name", required=True, help="the model this instance plays")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--delay", type=float, default=1.0,
                    help="seconds before each chat response starts (x-mock-delay overrides)")
    ap.add_argument("--chunk-delay", type=float, default=0.02,
                    help="seconds between SSE chunks of a streamed answer")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args(argv)

    server = MockServer((args.host, args.port), Handler, name=args.name, delay=args.delay,
                        chunk_delay=args.chunk_delay, verbose=args.verbose)

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
