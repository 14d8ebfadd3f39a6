"""The official, unmodified `openai` client against Envoy: routed misses and cached hits, JSON
and streamed, look like any OpenAI-compatible server to it."""
from __future__ import annotations

import openai
import pytest

from helpers import chat_body

MATH = "What is the integral of x² from 0 to π?"
ROME = "Who was the first emperor of Rome?"


@pytest.fixture
def client(vane):
    c = openai.OpenAI(base_url=vane.stack.url("/v1"), api_key=vane.api_key, max_retries=0, timeout=15)
    yield c
    c.close()


def messages(prompt):
    return [{"role": "user", "content": prompt}]


def joined(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_create_miss_then_cached_repeat(vane, client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages(MATH))
    assert raw.headers["x-vane-cache"] == "miss"
    assert raw.headers["x-vane-model"] == "math-model"
    assert raw.headers["x-vane-category"] == "math"
    first = raw.parse()
    assert first.model == "math-model"
    assert first.choices[0].message.content == f"math-model answers: {MATH}"
    assert first.choices[0].finish_reason == "stop"

    vane.wait_cached(chat_body(MATH))
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages(MATH))
    assert raw.headers["x-vane-cache"] == "hit"
    assert float(raw.headers["x-vane-similarity"]) == 1.0
    again = raw.parse()
    assert again.id == first.id
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.total_tokens == first.usage.total_tokens

    plain = client.chat.completions.create(model="auto", messages=messages(MATH))  # no raw wrapper
    assert plain.id == first.id
    assert len(vane.upstream_requests("math-model")) == 1


def test_stream_miss_then_stream_hit(vane, client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages(ROME), stream=True)
    assert raw.headers["x-vane-cache"] == "miss"
    assert raw.headers["x-vane-model"] == "general-model"
    text, chunks = joined(raw.parse())
    assert text == f"general-model answers: {ROME}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "general-model" for c in chunks)

    vane.wait_cached(chat_body(ROME))
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages(ROME), stream=True)
    assert raw.headers["x-vane-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    text2, chunks2 = joined(raw.parse())
    assert text2 == text
    assert chunks2[0].id == chunks[0].id
    assert chunks2[0].choices[0].delta.role == "assistant"
    assert chunks2[-1].choices[0].finish_reason == "stop"

    # The plain streaming API (no raw wrapper) works on a hit as well.
    text3, _ = joined(client.chat.completions.create(model="auto", messages=messages(ROME), stream=True))
    assert text3 == text
    # And a JSON request gets the streamed answer as a completion.
    resp = client.chat.completions.create(model="auto", messages=messages(ROME))
    assert resp.choices[0].message.content == text
    assert len(vane.upstream_requests("general-model")) == 1


def test_stream_hit_of_a_json_answer_with_usage(vane, client):
    first = client.chat.completions.create(model="auto", messages=messages(MATH))
    vane.wait_cached(chat_body(MATH))
    stream = client.chat.completions.create(model="auto", messages=messages(MATH), stream=True,
                                            stream_options={"include_usage": True})
    text, chunks = joined(stream)
    assert text == first.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == first.usage.total_tokens
    assert len(vane.upstream_requests("math-model")) == 1


def test_client_errors_are_openai_errors(vane, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="auto", messages=[])
    assert e.value.status_code == 400
    assert e.value.code == "invalid_request"
    assert e.value.param == "messages"
    assert vane.upstream_count() == 0
