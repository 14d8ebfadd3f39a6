"""The semantic cache: exact and paraphrased repeats are answered by Envoy without reaching an
upstream; JSON answers replay as SSE and streamed answers are stored for JSON repeats; the
client can bypass the cache."""
from __future__ import annotations

import json
import time

import pytest

from helpers import chat_body, sse_chunks, sse_events
from stack import config_variant

MATH = "What is the integral of x squared?"
ROME = "Who was the first emperor of Rome?"


def assert_hit(r):
    assert r.status == 200, r
    assert r.cache == "hit", r
    similarity = r.header("x-vane-similarity")
    assert similarity is not None and 0.93 <= float(similarity) <= 1.0001, r
    assert r.header("x-mock-upstream") is None, r  # answered by Envoy itself
    return float(similarity)


def test_exact_repeat_is_a_hit_with_the_same_body(vane):
    first = vane.chat_stored(MATH)
    assert first.header("x-mock-upstream") == "math-model"

    second = vane.chat(MATH)
    assert assert_hit(second) == 1.0
    assert second.body == first.body  # byte for byte
    assert second.header("content-type") == "application/json"
    assert int(second.header("content-length")) == len(second.body)
    assert len(vane.upstream_requests("math-model")) == 1  # no second upstream request
    assert vane.upstream_requests("general-model") == []


def test_paraphrase_is_a_hit(vane):
    first = vane.chat_stored(ROME)
    r = vane.chat("Who was Rome's first emperor?")
    similarity = assert_hit(r)
    assert similarity < 1.0  # a different prompt, similar enough
    assert r.body == first.body
    assert r.content == f"general-model answers: {ROME}"  # the cached answer
    assert vane.upstream_count() == 1


def test_paraphrase_with_different_wording_is_a_hit(vane):
    first = vane.chat_stored("What caused the French Revolution?")
    r = vane.chat("What were the causes of the French Revolution?")
    assert_hit(r)
    assert r.body == first.body
    assert vane.upstream_count() == 1


def test_unrelated_question_is_a_miss(vane):
    vane.chat_stored("How do I bake bread?")
    for prompt in ("Who painted the Mona Lisa?", "How do I make sourdough bread?"):
        r = vane.chat(prompt)
        assert r.status == 200 and r.cache == "miss", (prompt, r)
        assert r.header("x-vane-similarity") is None
        assert r.content == f"general-model answers: {prompt}"
    assert len(vane.upstream_requests("general-model")) == 3


def test_stream_request_replays_a_cached_json_answer_as_sse(vane):
    first = vane.chat_stored(MATH)
    cached = first.json()

    r = vane.chat(MATH, stream=True)
    assert_hit(r)
    assert r.header("content-type").startswith("text/event-stream"), r
    assert not r.truncated
    chunks = sse_chunks(r.body)  # well-formed: chunk objects, then data: [DONE]
    for c in chunks:
        assert c["id"] == cached["id"] and c["model"] == cached["model"] == "math-model"
        assert c["created"] == cached["created"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert r.content == cached["choices"][0]["message"]["content"]
    assert "usage" not in [k for c in chunks for k in c]  # not asked for
    assert vane.upstream_count() == 1


def test_stream_replay_includes_usage_when_asked(vane):
    first = vane.chat_stored(MATH)
    r = vane.chat(MATH, stream=True, stream_options={"include_usage": True})
    assert_hit(r)
    chunks = sse_chunks(r.body)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == first.json()["usage"]
    assert r.content == first.content


def test_streamed_miss_is_stored_and_a_json_repeat_hits(vane):
    first = vane.chat(ROME, stream=True)
    assert first.status == 200 and first.cache == "miss", first
    assert first.header("x-mock-upstream") == "general-model"
    assert first.header("content-type").startswith("text/event-stream")
    streamed = first.content  # asserts the upstream stream was complete
    assert streamed == f"general-model answers: {ROME}"
    assert len(sse_events(first.body)) > 4  # the upstream streamed word by word
    vane.wait_cached(chat_body(ROME))

    r = vane.chat(ROME)
    assert_hit(r)
    assert r.header("content-type") == "application/json"
    body = r.json()  # the completion the sidecar assembled from the stream
    assert body["object"] == "chat.completion"
    assert body["model"] == "general-model"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == streamed
    assert body["choices"][0]["finish_reason"] == "stop"
    first_chunk = json.loads(sse_events(first.body)[0])
    assert body["id"] == first_chunk["id"]

    again = vane.chat(ROME, stream=True)  # and a streamed repeat replays it
    assert_hit(again)
    assert again.content == streamed
    assert vane.upstream_count() == 1


def test_no_cache_header_bypasses_a_cached_answer(vane):
    vane.chat_stored(MATH)
    r = vane.chat(MATH, headers={"x-vane-cache-control": "no-cache"})
    assert r.status == 200, r
    assert r.cache == "bypass", r
    assert r.header("x-mock-upstream") == "math-model"
    assert r.header("x-vane-model") == "math-model"  # still routed
    assert r.header("x-vane-similarity") is None
    assert len(vane.upstream_requests("math-model")) == 2

    assert_hit(vane.chat(MATH))  # the entry is still there for normal requests


def test_no_store_header_is_not_cached(vane):
    r = vane.chat(ROME, headers={"x-vane-cache-control": "No-Store"})  # case-insensitive
    assert r.status == 200 and r.cache == "bypass", r
    assert r.header("x-vane-model") == "general-model"
    vane.assert_not_cached(chat_body(ROME))

    r = vane.chat(ROME)
    assert r.status == 200 and r.cache == "miss", r
    assert len(vane.upstream_requests("general-model")) == 2


@pytest.mark.parametrize("cached,asked", [
    ("What is 17 times 23?", "What is 17 times 24?"),
    ("When did the Second World War end?", "When did the Second World War begin?"),
    ("Convert 100 Fahrenheit to Celsius.", "Convert 100 Celsius to Fahrenheit."),
    ("Is this SHA-256 digest valid: ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb?",
     "Is this SHA-256 digest valid: 3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d?"),
    ("Translate to French: " + "supercalifragilistic" * 6, "Translate to French: " + "antidisestablishment" * 6),
], ids=["other_number", "end_vs_begin", "swapped_units", "other_digest", "long_word"])
def test_question_with_a_different_answer_is_not_a_hit(vane, cached, asked):
    """MiniLM scores each pair as the same question (0.91 to 1.0: words over 100 characters all
    become one unknown token); the near-duplicate guard must refuse the match."""
    vane.chat_stored(cached)
    r = vane.chat(asked)
    assert r.status == 200, r
    assert r.cache == "miss", r


def test_categories_can_tighten_the_threshold_or_never_be_cached(make_stack, tmp_path):
    config = config_variant(tmp_path / "vane.yaml", "cache-categories")
    v = make_stack(sidecar_config=config)
    v.chat_stored(ROME)
    assert assert_hit(v.chat(ROME)) == 1.0, "an exact repeat passes any threshold"
    r = v.chat("Who was Rome's first emperor?")
    assert r.status == 200 and r.cache == "miss", r
    # Never cached: the repeat goes upstream again and nothing is stored.
    code = "How do I reverse a linked list in Python?"
    for _ in range(2):
        r = v.chat(code)
        assert r.status == 200 and r.cache == "miss", r
        v.assert_not_cached(chat_body(code))
    assert len(v.upstream_requests("general-model")) == 4  # Rome, its paraphrase, the code question twice
    # Other categories keep the global threshold.
    v.chat_stored(MATH)
    assert 0.93 <= assert_hit(v.chat("what is the integral of x squared")) < 1.0


def test_entries_expire_after_the_ttl(make_stack, tmp_path):
    config = config_variant(tmp_path / "vane.yaml", "cache-ttl")
    v = make_stack(sidecar_config=config)
    v.chat_stored(MATH)
    assert_hit(v.chat(MATH))
    time.sleep(1.2)
    r = v.chat(MATH)
    assert r.status == 200 and r.cache == "miss", r
    assert len(v.upstream_requests("math-model")) == 2


def test_the_cache_survives_a_sidecar_restart_through_its_snapshot(make_stack, tmp_path):
    snapshot = tmp_path / "cache.snap"
    config = config_variant(tmp_path / "vane.yaml", {"cache": {"snapshot": str(snapshot), "snapshot_interval_seconds": 0}})
    v = make_stack(sidecar_config=config)
    first = v.chat_stored(ROME)
    v.stack.stop_sidecar()  # SIGTERM: the sidecar writes its snapshot on the way out
    assert snapshot.stat().st_size > 0
    v.stack.start_sidecar()
    v.reset_upstreams()
    r = v.chat("Who was Rome's first emperor?")
    assert_hit(r)
    assert r.body == first.body
    assert v.upstream_count() == 0
