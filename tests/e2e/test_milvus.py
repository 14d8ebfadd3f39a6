"""The semantic cache on Milvus (cache.backend: milvus) through Envoy, against a real Milvus 2.3.5
(tests/milvus_server.py): repeats and paraphrases are hits; with Milvus stopped mid-run requests
are still served (misses, errors counted); once it is back the sidecar reconnects and hits again."""
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
