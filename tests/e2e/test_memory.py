"""The sidecar's memory stays bounded with large prompts and answers (issue 19, item 4):
the sidecar keeps nothing for a request once its Route is answered (the ticket is the filter's
to hold, and dropped with an answer that is not stored), the embedded cache is bounded in bytes and refuses oversized entries, and one Route or Store may
only carry so much. Seen through the sidecar's /metrics, with small bounds so a few requests
of a few hundred KB reach them."""
from __future__ import annotations

import http.client
import json
import re
import socket
import time

from helpers import chat_body
from stack import config_variant

KIB = 1024
# Large prompts take a debug-build sidecar longer than the filter's default 200 ms to route.
FILTER = {"timeout_ms": 5000}


def big_prompt(i: int, size: int) -> str:
    """A benign prompt of about ``size`` bytes; ``i`` makes it distinct."""
    words = ("river", "mountain", "garden", "window", "letter", "market", "harbour", "lantern")
    text = f"Please summarise note number {i}: " + " ".join(f"{words[(i + k) % len(words)]}{k % 97}" for k in range(size // 9))
    return text[:size]


def sidecar_config(tmp_path, **sections):
    """The demo configuration with ``sections`` (``cache={...}``, ``server={...}``) merged in,
    without jailbreak judgement: these prompts are far over its window budget (they would be
    refused as too long to judge), and what is tested here is what the sidecar holds."""
    return config_variant(tmp_path / "vane.yaml", "no-jailbreak", sections)


def metric(v, name: str, labels: str | None = None) -> float:
    """One sample of the sidecar's metrics (0 when absent, as for a labelled counter not yet hit)."""
    sel = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    m = re.search(rf"^{sel} (\S+)$", v.get_metrics_text(), re.M)
    return float(m.group(1)) if m else 0.0


def require_metric(v, name: str) -> None:
    assert re.search(rf"^{re.escape(name)} ", v.get_metrics_text(), re.M), f"{name} is not exported"


def wait_for(check, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_answers_that_are_not_stored_leave_nothing_in_the_sidecar(make_stack, tmp_path):
    """The issue's reproducer, scaled down: large prompts whose upstream answers 400. Before,
    each kept its prompt in the sidecar for 600 s; now the ticket (prompt included) lives in the
    filter for the request alone, and an answer that is not stored (an error, a truncated
    answer, a client gone) sends nothing at all to the sidecar."""
    v = make_stack(sidecar_config=sidecar_config(tmp_path), filter_config=FILTER)
    n = 12  # 12 x 200 KB
    for i in range(n):
        r = v.chat(big_prompt(i, 200 * KIB), headers={"x-mock-status": "400"}, api_key=f"{v.api_key}-{i}")
        assert r.status == 400 and r.cache == "miss", r

    # A truncated answer, and a stream whose client goes away.
    r = v.post(chat_body("What is 12 times 14?"), {"x-mock-truncate": "rst"})
    assert r.status != 200 or r.truncated, r
    prompt = "Repeat these words: " + " ".join(f"word{i}" for i in range(60))
    conn = http.client.HTTPConnection("127.0.0.1", v.stack.envoy_port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body(prompt, stream=True)), dict(v.headers()))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("x-vane-cache") == "miss"
    assert resp.read1(256)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    time.sleep(0.5)  # a Store would have been flushed (every 10 ms) and counted by now
    assert v.store_counts() == {}, "no Store for an answer that is not cached"

    # Control: a good answer is stored, once.
    v.chat_stored("What is 13 times 15?")
    assert v.store_counts() == {"stored": 1}


def test_the_cache_is_bounded_in_bytes_and_refuses_oversized_entries(make_stack, tmp_path):
    """Answers of ~100 KB (the mock echoes the prompt) under a 1 MiB cache: the oldest are
    evicted, vane_cache_bytes stays within the bound; an entry over max_entry_bytes is never
    stored, and a prompt that alone is over it gets no ticket."""
    bound = 1024 * KIB
    config = sidecar_config(tmp_path, cache={"max_bytes": bound, "max_entry_bytes": "300KiB"})
    v = make_stack(sidecar_config=config, filter_config=FILTER)
    require_metric(v, "vane_cache_bytes")
    keys = [f"{v.api_key}-{i}" for i in range(10)]  # a tenant each: no cross hits
    for i, key in enumerate(keys):
        v.chat_stored(big_prompt(200 + i, 100 * KIB), api_key=key)
        used = metric(v, "vane_cache_bytes")
        assert 0 < used <= bound, f"{used} cache bytes after {i + 1} answers"
    entries = metric(v, "vane_cache_entries")
    assert 3 <= entries <= 5, f"about 1 MiB / 200 KB entries kept: {entries}"
    v.assert_not_cached(chat_body(big_prompt(200, 100 * KIB)), api_key=keys[0])  # the oldest left
    v.wait_cached(chat_body(big_prompt(209, 100 * KIB)), api_key=keys[-1])  # the newest stays

    # ~400 KB entry (prompt + echoed answer) over 300 KiB: answered, never stored.
    too_large = metric(v, "vane_cache_stores_total", 'result="too_large"')
    prompt = big_prompt(300, 200 * KIB)
    r = v.chat(prompt)
    assert r.status == 200 and r.cache == "miss", r
    wait_for(lambda: metric(v, "vane_cache_stores_total", 'result="too_large"') == too_large + 1, "store refused as too_large")
    v.assert_not_cached(chat_body(prompt))
    # A 350 KB prompt could never be stored: no ticket at all.
    r = v.chat(big_prompt(301, 350 * KIB))
    assert r.status == 200 and r.cache == "miss", r
    assert metric(v, "vane_tickets_dropped_total", 'reason="too_large"') == 1
    assert metric(v, "vane_cache_bytes") <= bound


def test_route_and_store_are_capped_per_call(make_stack, tmp_path):
    """A Route over server.max_route_bytes is refused (the filter fails open, says why); a
    Store over server.max_store_bytes is not stored."""
    config = sidecar_config(tmp_path, server={"max_route_bytes": "64KiB", "max_store_bytes": "32KiB"})
    v = make_stack(sidecar_config=config, filter_config=FILTER)
    prompt = big_prompt(1, 100 * KIB)
    r = v.chat(prompt)
    assert r.status == 200, r
    assert r.header("x-vane-fallback") == "sidecar_too_large", r
    name, sent = v.only_upstream_request()
    assert sent["body"]["messages"][-1]["content"] == prompt, "forwarded untouched"

    # Under the Route cap, but its echoed answer (~40 KB) is over the Store cap.
    prompt = big_prompt(2, 40 * KIB)
    r = v.chat(prompt)
    assert r.status == 200 and r.cache == "miss" and r.header("x-vane-fallback") is None, r
    wait_for(lambda: metric(v, "vane_cache_stores_total", 'result="too_large"') == 1, "store refused as too_large")
    v.assert_not_cached(chat_body(prompt))
    v.chat_stored("What is 12 times 14?")  # control: small answers are stored
