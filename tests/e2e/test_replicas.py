"""Two sidecar replicas behind Envoy's one sidecar cluster (Envoy --concurrency 2, round robin),
sharing one real Milvus (tests/milvus_server.py) and one ticket key (cache.tickets.key_file):
a Store may reach another replica than its Route (crates/sidecar/src/tickets.rs). Every completed
answer is stored exactly once and then served from either replica; a conversation stays on its
model whichever replica routes each turn; killing a replica under load loses no request."""
from __future__ import annotations

import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import admin_request, chat_body, get_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from milvus_server import MilvusServer  # noqa: E402
from stack import config_variant, wait_until  # noqa: E402
from test_multi_turn import FOLLOW_UP, HISTORY, MATH  # noqa: E402

QUESTIONS = [f"What is the capital of {c}?" for c in
             ("France", "Peru", "Kenya", "Norway", "Chile", "Japan", "Egypt", "Canada", "Greece", "Vietnam", "Poland", "Ghana")]


@pytest.fixture
def replicas(make_stack, tmp_path):
    """A stack with two sidecars on one Milvus; yields its handle."""
    key = tmp_path / "ticket.key"
    key.write_bytes(bytes(range(32)))  # a test's key; a deployment's comes from a Secret
    with MilvusServer(tmp_path / "milvus") as milvus:
        config = config_variant(tmp_path / "vane.yaml", "milvus", {"cache": {
            "milvus": {"address": milvus.address, "collection": "e2e_replicas"}, "tickets": {"key_file": str(key)}}})
        yield make_stack(sidecar_config=config, sidecars=2)


def counts(admin_port: int, family: str, label: str) -> dict[str, int]:
    """``family`` by the value of ``label`` on one replica (other labels summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, int] = {}
    for m in re.finditer(rf'^{family}\{{([^}}]*)\}} (\S+)', text, re.M):
        value = re.search(rf'{label}="([^"]*)"', m.group(1))
        if value:
            out[value.group(1)] = out.get(value.group(1), 0) + int(float(m.group(2)))
    return out


def per_replica(v, family: str, label: str, value: str) -> list[int]:
    return [counts(admin, family, label).get(value, 0) for _, admin in v.stack.replica_ports]


def test_every_answer_is_stored_once_and_served_by_either_replica(replicas):
    v = replicas
    for q in QUESTIONS:
        r = v.chat(q)
        assert r.status == 200 and r.cache == "miss", r
    stored = wait_until(lambda: (s := per_replica(v, "vane_cache_stores_total", "result", "stored")) and sum(s) >= len(QUESTIONS) and s,
                        "every answer stored", 20.0)
    time.sleep(0.5)  # a duplicate write would land by now
    stored = per_replica(v, "vane_cache_stores_total", "result", "stored")
    refused = [sum(per_replica(v, "vane_cache_stores_total", "result", r)) for r in ("invalid_ticket", "expired_ticket")]
    assert sum(stored) == len(QUESTIONS) and refused == [0, 0], (stored, refused)
    assert all(n > 0 for n in stored), f"Stores reach both replicas: {stored}"
    routed = per_replica(v, "vane_route_decisions_total", "decision", "forward")
    assert all(n > 0 for n in routed), f"Routes reach both replicas: {routed}"
    # One entry per answer in the shared Milvus, as either replica counts them.
    for _, admin in v.stack.replica_ports:
        wait_until(lambda: get_json(f"http://127.0.0.1:{admin}/v1/cache/stats")["entries"] == len(QUESTIONS),
                   "Milvus holds each answer once", 20.0)

    # Repeats: hits, answered by both replicas.
    upstream = v.upstream_count()
    for q in QUESTIONS:
        r = v.wait_cached(chat_body(q), timeout=10)
        assert r.status == 200 and r.cache == "hit", r
    hits = [counts(admin, "vane_cache_lookups_total", "result").get("hit", 0) for _, admin in v.stack.replica_ports]
    assert all(n > 0 for n in hits), f"both replicas answer from the shared cache: {hits}"
    assert v.upstream_count() == upstream
    print(f"2 replicas: {len(QUESTIONS)} answers, stored {stored} (sum {sum(stored)}), refused {refused}, "
          f"routes {routed}, hits {hits}")


def test_a_conversation_stays_on_its_model_across_replicas(replicas):
    """test_multi_turn's conversation, several times over (its own tenant each, so its own
    conversation): its turns land on both replicas, and each conversation keeps its model."""
    v = replicas
    script = [(HISTORY, "general-model"), (FOLLOW_UP, "general-model"), (MATH, "math-model"), ("When did it end?", "math-model")]
    for n in range(6):
        key, history = f"{v.api_key}-conversation-{n}", []
        for prompt, model in script:
            r = v.post(chat_body(prompt, history=history), api_key=key)
            assert r.status == 200 and r.header("x-vane-model") == model, (n, prompt, r)
            history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": r.content}]
    routed = per_replica(v, "vane_route_decisions_total", "decision", "forward")
    assert all(n > 3 for n in routed), f"turns were routed by both replicas: {routed}"


def test_killing_a_replica_under_load_loses_no_request(replicas):
    v = replicas
    answers, stopping = [], threading.Event()

    def load():
        n = 0
        while not stopping.is_set():
            n += 1
            r = v.chat(f"Solve {n}x + 4 = {n + 19} for x.")
            answers.append((time.monotonic(), r.status, r.header("x-vane-fallback")))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    wait_until(lambda: len(answers) >= 20, "load under way", 20.0)
    v.stack.replicas[1].kill()  # no goodbye: as if the node died
    killed = time.monotonic()
    wait_until(lambda: sum(1 for a in answers if a[0] > killed + 1) >= 20, "load after the kill", 20.0)
    stopping.set()
    thread.join(30)
    lost = [a for a in answers if a[1] != 200]
    fell_back = [a for a in answers if a[2] is not None]
    after = [a for a in answers if a[0] > killed + 1]
    assert not lost, f"{len(lost)} of {len(answers)} requests failed: {lost[:5]}"
    assert not any(a[2] for a in after[-10:]), "the surviving replica answers once the dead one is known"
    status, stats = admin_request(v.stack, "/v1/cache/stats")
    assert status == 200
    print(f"replica killed under load: {len(answers)} requests, {len(lost)} failed, {len(fell_back)} failed open "
          f"(x-vane-fallback)")
