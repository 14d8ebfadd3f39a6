"""The semantic cache on Milvus (cache.backend: milvus) through Envoy, against a real Milvus 2.3.5
(tests/milvus_server.py): repeats and paraphrases are hits; with Milvus stopped mid-run requests
are still served (misses, errors counted); once it is back the sidecar reconnects and hits again."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from helpers import chat_body

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from milvus_server import MilvusServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROME = "Who was the first emperor of Rome?"


def milvus_config(tmp_path: Path, address: str) -> Path:
    """config/vane.yaml with absolute paths and the cache on Milvus."""
    text = (ROOT / "config" / "vane.yaml").read_text()
    text = text.replace("../models/build/", f"{ROOT}/models/build/").replace("head: heads/", f"head: {ROOT}/config/heads/")
    anchor = "  max_entries: 10000\n"
    assert anchor in text, "config/vane.yaml's cache section changed"
    text = text.replace(anchor, anchor + f"  backend: milvus\n  milvus: {{ address: '{address}', collection: e2e_cache }}\n")
    path = tmp_path / "vane-milvus.yaml"
    path.write_text(text)
    return path


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


def test_admin_flush_empties_the_milvus_collection(make_stack, milvus, tmp_path):
    import json
    import urllib.request
    v = make_stack(sidecar_config=milvus_config(tmp_path, milvus.address))
    v.chat_stored(ROME)
    url = f"http://127.0.0.1:{v.stack.admin_port}/v1/cache"
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as r:
        assert json.load(r)["backend"] == "milvus"
    req = urllib.request.Request(f"{url}/flush", data=b"{}", method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.load(r)["invalidated"] >= 1
    deadline = time.monotonic() + 10  # deletes become visible within Milvus's time tick
    while (r := v.chat(ROME)).cache == "hit":  # (a miss stores the answer again: stop at the first)
        assert time.monotonic() < deadline, "still a hit 10 s after the flush"
        time.sleep(0.3)
    assert r.status == 200 and r.cache == "miss", r
