"""The semantic cache on Milvus (cache.backend: milvus) through Envoy, against a real Milvus 2.3.5
(tests/milvus_server.py): repeats and paraphrases are hits; with Milvus stopped mid-run requests
are still served (misses, errors counted); once it is back the sidecar reconnects and hits again.
A hung Milvus (paused: connections open, nothing answered) opens the circuit breaker within a
second, after which requests are plain misses that do not wait for it, until a probe finds it
answering again."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from helpers import admin_request, chat_body

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from milvus_server import MilvusServer  # noqa: E402
from stack import config_variant  # noqa: E402

ROME = "Who was the first emperor of Rome?"


def milvus_config(tmp_path: Path, address: str) -> Path:
    """config/vane.yaml with the cache on Milvus at ``address``."""
    return config_variant(tmp_path / "vane-milvus.yaml", "milvus", {"cache": {"milvus": {"address": address}}})


@pytest.fixture
def milvus(tmp_path):
    with MilvusServer(tmp_path / "milvus") as server:
        yield server


def errors(v) -> int:
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in v.get_metrics_text().splitlines()
               if line.startswith('vane_cache_errors_total{backend="milvus"'))


def test_cache_on_milvus_hits_fails_open_and_reconnects(make_stack, milvus, tmp_path):
    v = make_stack(sidecar_config=milvus_config(tmp_path, milvus.address))
    first = v.chat_stored(ROME)
    r = v.chat(ROME)
    assert r.status == 200 and r.cache == "hit" and r.body == first.body, r
    assert float(r.header("x-vane-similarity")) == 1.0  # exact tier
    r = v.chat("Who was Rome's first emperor?")
    assert r.status == 200 and r.cache == "hit" and r.body == first.body, r
    assert 0.93 <= float(r.header("x-vane-similarity")) < 1.0  # semantic tier
    assert errors(v) == 0

    milvus.stop(kill=True)  # no goodbye: as if the node died
    before = v.upstream_count()
    started = time.monotonic()
    for prompt in (ROME, "Who was Rome's first emperor?", "What is the capital of Peru?"):
        r = v.chat(prompt)
        assert r.status == 200 and r.cache == "miss", r  # served by the model, not failed
    assert time.monotonic() - started < 10
    assert v.upstream_count() == before + 3
    assert errors(v) >= 3, v.get_metrics_text()

    milvus.start()  # same data dir: the entries stored before are still there
    body = chat_body(ROME)
    r = v.wait_cached(body, timeout=30)
    assert r.body == first.body, r
    v.chat_stored("What is the capital of Peru?")


def test_admin_invalidate_and_flush_on_milvus(make_stack, milvus, tmp_path):
    from test_cache_admin import MATH
    v = make_stack(sidecar_config=milvus_config(tmp_path, milvus.address))
    other = v.api_key + "-other"
    for key in (v.api_key, other):
        v.chat_stored(ROME, api_key=key)
    v.chat_stored(MATH)
    status, stats = admin_request(v.stack, "/v1/cache/stats")
    assert (status, stats["backend"], stats["entries"]) == (200, "milvus", 3), stats

    def gone(prompt: str, **kw):
        deadline = time.monotonic() + 10  # Milvus applies deletes asynchronously
        while (r := v.chat(prompt, **kw)).cache == "hit":  # (a miss stores again: stop at the first)
            assert time.monotonic() < deadline, f"{prompt!r} still a hit 10 s after its invalidation"
            time.sleep(0.3)
        assert r.status == 200 and r.cache == "miss", r

    # By credential (hashed as the filter does): this tenant's entries only.
    assert admin_request(v.stack, "/v1/cache/invalidate", {"api_key": f"Bearer {v.api_key}"}) == (200, {"invalidated": 2})
    gone(ROME)
    assert v.chat(ROME, api_key=other).cache == "hit", "another tenant's entry stays"
    # By the entry id a hit reported.
    entry = v.chat(ROME, api_key=other).header("x-vane-cache-entry")
    assert admin_request(v.stack, "/v1/cache/invalidate", {"id": entry}) == (200, {"invalidated": 1})
    gone(ROME, api_key=other)
    # Flush: everything (and whatever the misses above stored again by then).
    status, got = admin_request(v.stack, "/v1/cache/flush", {})
    assert status == 200 and got["invalidated"] >= 1, got
    gone(MATH)


def metric(v, name: str, labels: str = "") -> float:
    """The sum of the sidecar's ``name`` series whose labels include ``labels``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in v.get_metrics_text().splitlines()
               if line.startswith(name + "{") and labels in line)


def lookup_errors(v) -> float:
    return sum(metric(v, "vane_cache_errors_total", f'backend="milvus",op="{op}"') for op in ("lookup_exact", "lookup"))


def test_a_hung_milvus_opens_the_circuit_and_requests_stop_waiting_for_it(make_stack, milvus, tmp_path):
    v = make_stack(sidecar_config=milvus_config(tmp_path, milvus.address))
    first = v.chat_stored(ROME)
    assert v.chat(ROME).cache == "hit"
    assert metric(v, "vane_cache_breaker_transitions_total") == 0

    milvus.pause()  # SIGSTOP: every lookup waits for its timeout
    try:
        paused = time.monotonic()
        n = 0
        while time.monotonic() - paused < 1.0:  # the first requests may wait (or fall back)
            n += 1
            r = v.chat(f"What is {n} plus {n}?")
            assert r.status == 200, r
        assert metric(v, "vane_cache_breaker_open", 'backend="milvus"') == 1, "open within a second"
        assert metric(v, "vane_cache_breaker_transitions_total", 'to="open"') >= 1
        assert "milvus cache circuit open" in (v.stack.dir / "sidecar.log").read_text()
        # Open: a request costs a miss. No lookup reaches Milvus, so none times out.
        failed, skipped = lookup_errors(v), metric(v, "vane_cache_breaker_skipped_total", 'op="lookup')
        took = []
        for i in range(5):
            started = time.monotonic()
            r = v.chat(f"Name a prime number above {100 * (i + 1)}.")
            took.append(time.monotonic() - started)
            assert r.status == 200 and r.cache == "miss" and r.header("x-vane-fallback") is None, r
        assert lookup_errors(v) == failed, "no lookup asked Milvus"
        assert metric(v, "vane_cache_breaker_skipped_total", 'op="lookup') >= skipped + 10, "both tiers skipped"
        assert sorted(took)[2] < 0.16, f"a request waits for no lookup timeout (2 x 80 ms): {took}"
    finally:
        milvus.resume()

    # A probe in the background finds Milvus answering and closes the circuit: hits again.
    r = v.wait_cached(chat_body(ROME), timeout=30)
    assert r.body == first.body, r
    assert metric(v, "vane_cache_breaker_open", 'backend="milvus"') == 0
    assert metric(v, "vane_cache_breaker_transitions_total", 'to="closed"') >= 1
