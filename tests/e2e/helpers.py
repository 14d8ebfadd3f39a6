"""Helpers for the end-to-end tests: raw HTTP against Envoy, the mock upstreams' records, the
sidecar's metrics, SSE parsing.

Everything here talks HTTP with the standard library (``http.client``) so the tests control
the exact bytes sent (raw header bytes, chunked bodies, invalid UTF-8) and see the exact
status, headers and body that came back.
"""
from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import Message

CHAT = "/v1/chat/completions"
MODELS = ("math-model", "general-model")
PROBE = "x-e2e-probe"  # marks the tests' own cache probes (see Vane.probe)

# Lines in the Envoy / sidecar logs that mean the wasm VM (or the sidecar) crashed.
CRASH_RE = re.compile(r"panicked at|Uncaught|RuntimeError|wasm vm crash|Wasm VM failed", re.I)


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes
    truncated: bool = False  # the connection closed before the whole body came

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def vane(self) -> dict[str, str]:
        """The x-vane-* response headers (lowercased names)."""
        return {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-vane-")}

    @property
    def cache(self) -> str | None:
        return self.header("x-vane-cache")

    def json(self):
        return json.loads(self.body)

    @property
    def content(self) -> str:
        """The assistant's text: from a JSON completion or assembled from an SSE stream."""
        if self.is_sse:
            return sse_content(self.body)
        return self.json()["choices"][0]["message"]["content"]

    @property
    def is_sse(self) -> bool:
        return (self.header("content-type") or "").startswith("text/event-stream")

    def __repr__(self) -> str:  # readable assertion messages
        body = self.body[:600].decode("utf-8", "replace")
        return f"Reply({self.status}, {dict(self.headers.items())}, {body!r}, truncated={self.truncated})"


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict | list | None = None, *, chunked: bool = False,
                 timeout: float = 15) -> Reply:
    """One request on a fresh connection. Header values may be bytes (sent as they are).

    ``body`` is framed by content-length unless ``chunked``. If the server answers before the
    whole body is sent (e.g. 413), the send error is ignored and its answer read.
    """
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in items:
            conn.putheader(k, v)
        if body is not None:
            if chunked:
                conn.putheader("transfer-encoding", "chunked")
            else:
                conn.putheader("content-length", str(len(body)))
        conn.endheaders()
        if body is not None:
            try:
                if chunked:
                    for i in range(0, len(body), 16384):
                        piece = body[i:i + 16384]
                        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    conn.send(b"0\r\n\r\n")
                elif body:
                    conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered early; the answer is still readable
        resp = conn.getresponse()
        truncated = False
        try:
            data = resp.read()
        except http.client.IncompleteRead as e:
            data, truncated = e.partial, True
        except ConnectionResetError:
            data, truncated = b"", True
        return Reply(resp.status, resp.headers, data, truncated)
    finally:
        conn.close()


def chat_body(prompt: str, *, model: str = "auto", system: str | None = None,
              history: list | None = None, stream: bool = False, **extra) -> dict:
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages += history or []
    messages.append({"role": "user", "content": prompt})
    body = {"model": model, "messages": messages, **extra}
    if stream:
        body["stream"] = True
    return body


# What config/vane.yaml's routing writes into a body sent to each model (reasoning settings).
MATH_THINKING = {"chat_template_kwargs": {"enable_thinking": True}}


def routed_to_math(sent: dict) -> dict:
    """The body the math model receives for a routed maths prompt: new model, thinking on."""
    return {**sent, "model": "math-model", **MATH_THINKING}


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def admin_request(stack, path: str, body: dict | bytes | None = None) -> tuple[int, object]:
    """(status, JSON answer) of the sidecar's admin API: GET without a body, POST with one."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{stack.admin_port}{path}", data=data,
                                 method="GET" if body is None else "POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def post_json(url: str, obj) -> None:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


# ---- SSE -------------------------------------------------------------------------------------

def sse_events(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (``[DONE]`` included)."""
    text = body.decode("utf-8")
    events = []
    for block in text.split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


def sse_chunks(body: bytes) -> list[dict]:
    """The chunk objects of a *complete* SSE body; asserts it is well-formed."""
    text = body.decode("utf-8")
    assert text.endswith("data: [DONE]\n\n"), f"SSE body does not end with [DONE]: {text[-200:]!r}"
    events = sse_events(body)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1], events
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks, "no chunks before [DONE]"
    for c in chunks:
        assert c["object"] == "chat.completion.chunk", c
        assert isinstance(c["choices"], list), c
    return chunks


def sse_content(body: bytes) -> str:
    return "".join(ch["delta"].get("content") or ""
                   for c in sse_chunks(body) for ch in c["choices"])


# ---- one stack, seen from a test -------------------------------------------------------------

@dataclass
class Vane:
    """A test's handle on a running stack. ``api_key`` makes the test its own cache tenant, so
    tests sharing a stack (and its cache) cannot hit each other's entries."""
    stack: object
    api_key: str
    _crash_mark: int = field(default=0)

    # -- requests --
    def headers(self, extra: dict | list | None = None, *, api_key: str | bytes | None = None,
                auth: bool = True) -> list:
        out = [("content-type", "application/json")]
        if auth:
            key = self.api_key if api_key is None else api_key
            out.append(("authorization", (b"Bearer " + key) if isinstance(key, bytes) else f"Bearer {key}"))
        extra = list(extra.items()) if isinstance(extra, dict) else list(extra or [])
        names = {k.lower() for k, _ in extra}
        return [(k, v) for k, v in out if k not in names] + extra

    def post(self, body: dict | bytes, headers: dict | list | None = None, *, path: str = CHAT,
             api_key: str | bytes | None = None, auth: bool = True, chunked: bool = False) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http_request(self.stack.envoy_port, "POST", path, raw,
                            self.headers(headers, api_key=api_key, auth=auth), chunked=chunked)

    def chat(self, prompt: str, *, headers: dict | list | None = None,
             api_key: str | bytes | None = None, auth: bool = True, **body) -> Reply:
        return self.post(chat_body(prompt, **body), headers, api_key=api_key, auth=auth)

    def get(self, path: str, headers: dict | list | None = None) -> Reply:
        return http_request(self.stack.envoy_port, "GET", path, None, headers)

    # -- the mock upstreams --
    def upstream_requests(self, name: str) -> list[dict]:
        """The chat requests upstream ``name`` received (cache probes left out)."""
        got = get_json(self.stack.upstream_url(name, "/mock/requests"))["requests"]
        return [r for r in got if PROBE not in r["headers"]]

    def all_upstream_requests(self) -> dict[str, list[dict]]:
        return {name: self.upstream_requests(name) for name in self.stack.models}

    def upstream_count(self) -> int:
        return sum(len(v) for v in self.all_upstream_requests().values())

    def only_upstream_request(self) -> tuple[str, dict]:
        """The single chat request the upstreams received (asserts there was exactly one)."""
        seen = [(name, r) for name, reqs in self.all_upstream_requests().items() for r in reqs]
        assert len(seen) == 1, f"expected exactly one upstream request, got {len(seen)}: " + \
            json.dumps([(n, r.get("body")) for n, r in seen])[:2000]
        return seen[0]

    def reset_upstreams(self) -> None:
        for name in self.stack.models:
            post_json(self.stack.upstream_url(name, "/mock/reset"), {})

    # -- waiting for the cache --
    def probe(self, body: dict, *, api_key: str | bytes | None = None, auth: bool = True,
              headers: dict | list | None = None, path: str = CHAT) -> Reply:
        """Asks whether ``body`` is answered from the cache, without disturbing the test: the
        probe is marked (the upstream records leave it out) and, should it miss, the upstream
        answers it with an error (``x-mock-status``), which is never cached."""
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        extra = [(k, v) for k, v in (headers.items() if isinstance(headers, dict) else headers or [])
                 if k.lower() not in ("x-vane-cache-control", "x-mock-status", "x-mock-truncate")]
        return self.post(body, extra + [(PROBE, "1"), ("x-mock-status", "503")],
                         api_key=api_key, auth=auth, path=path)

    def wait_cached(self, body: dict, timeout: float = 3.0, **kw) -> Reply:
        """Waits until ``body`` (same tenant, same everything) is a cache hit; returns the hit.

        Cache writes happen after the response completed (the filter queues them and flushes
        every ~10 ms), so a repeat sent right after a miss could race them."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.probe(body, **kw)
            if r.cache == "hit":
                assert r.status == 200, r
                return r
            assert r.status == 503 and r.cache == "miss", f"unexpected probe answer: {r}"
            if time.monotonic() > deadline:
                raise AssertionError(f"not cached within {timeout}s: {json.dumps(body)[:300]} "
                                     f"(sidecar store results: {self.store_counts()})")
            time.sleep(0.02)

    def assert_not_cached(self, body: dict, window: float = 0.4, **kw) -> None:
        """Asserts ``body`` does not become a cache hit: a wrong cache write would land within
        a few tens of ms, so it is probed for ``window`` seconds."""
        deadline = time.monotonic() + window
        while True:
            r = self.probe(body, **kw)
            assert r.cache == "miss" and r.status == 503, f"answered from the cache: {r}"
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def chat_stored(self, prompt: str, *, headers: dict | list | None = None,
                    api_key: str | bytes | None = None, auth: bool = True, path: str = CHAT,
                    **body_kw) -> Reply:
        """A chat request that must miss; returns once its answer is in the cache."""
        body = chat_body(prompt, **body_kw)
        r = self.post(body, headers, api_key=api_key, auth=auth, path=path)
        assert r.status == 200 and r.cache == "miss", r
        self.wait_cached(body, api_key=api_key, auth=auth, headers=headers, path=path)
        return r

    def get_metrics_text(self) -> str:
        """The sidecar's Prometheus exposition."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stack.admin_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def store_counts(self) -> dict[str, int]:
        """``vane_cache_stores_total`` by result (stored, truncated_stream, ...): diagnostics."""
        return {m.group(1): int(m.group(2)) for m in
                re.finditer(r'^vane_cache_stores_total\{result="([^"]+)"\} (\d+)', self.get_metrics_text(), re.M)}

    # -- health --
    def crash_lines(self) -> list[str]:
        lines = []
        for name in ("envoy.log", "sidecar.log"):
            path = self.stack.dir / name
            if path.exists():
                lines += [l for l in path.read_text(errors="replace").splitlines() if CRASH_RE.search(l)]
        return lines

    def mark_crashes(self) -> None:
        self._crash_mark = len(self.crash_lines())

    def assert_no_crash(self) -> None:
        new = self.crash_lines()[self._crash_mark:]
        assert not new, "the wasm VM or the sidecar crashed:\n" + "\n".join(new)


# ---- JWTs for the tenant tests ------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtIssuer:
    """An identity provider made for one test: a fresh RSA keypair, the JWKS Envoy's jwt_authn
    verifies with (``stack_jwt()`` is Stack's ``jwt`` argument), and RS256 tokens signed by it."""

    def __init__(self, issuer: str = "https://issuer.vane.test", kid: str = "e2e"):
        from cryptography.hazmat.primitives.asymmetric import rsa
        self.issuer, self.kid = issuer, kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def jwks(self) -> str:
        numbers = self.key.public_key().public_numbers()
        as_b64 = lambda n: b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))  # noqa: E731
        return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                                     "n": as_b64(numbers.n), "e": as_b64(numbers.e)}]})

    def token(self, **claims) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"iss": self.issuer, "iat": int(time.time()), "exp": int(time.time()) + 3600, **claims}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def stack_jwt(self, claim: str = "tenant") -> dict:
        return {"issuer": self.issuer, "jwks": self.jwks, "claim": claim}
