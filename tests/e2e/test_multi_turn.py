"""Multi-turn routing: a conversation is classified with its earlier turns and stays on the model
it started with, unless a new turn clearly needs a costlier model (config/vane.yaml: math-model
costs 3, general-model 1; conversations never move down)."""
from __future__ import annotations

from helpers import chat_body

HISTORY = "When did the First World War begin?"
FOLLOW_UP = "And which countries fought in it?"
MATH = "Solve 3x + 4 = 19 for x."


def turn(vane, history: list, prompt: str):
    r = vane.post(chat_body(prompt, history=history))
    assert r.status == 200 and r.cache == "miss", r
    return r


def test_conversation_stays_moves_up_for_maths_and_never_down(vane):
    history = []
    r = turn(vane, history, HISTORY)
    assert r.header("x-vane-model") == "general-model", r
    history += [{"role": "user", "content": HISTORY}, {"role": "assistant", "content": r.content}]

    r = turn(vane, history, FOLLOW_UP)
    assert r.header("x-vane-model") == "general-model", r
    history += [{"role": "user", "content": FOLLOW_UP}, {"role": "assistant", "content": r.content}]

    # A clear maths question needs the costlier model: the conversation moves up.
    r = turn(vane, history, MATH)
    assert r.header("x-vane-model") == "math-model" and r.header("x-vane-category") == "math", r
    history += [{"role": "user", "content": MATH}, {"role": "assistant", "content": r.content}]

    # Back to history: the conversation stays on math-model instead of bouncing down...
    r = turn(vane, history, "When did it end?")
    assert r.header("x-vane-model") == "math-model", r
    got = vane.upstream_requests("math-model")[-1]
    assert got["body"]["messages"][-1]["content"] == "When did it end?"
    # ...while the same question opening a conversation of its own goes to general-model.
    r = vane.chat("When did the First World War end?")
    assert r.header("x-vane-model") == "general-model", r


def test_conversations_are_told_apart_by_tenant(vane):
    history = [{"role": "user", "content": MATH}, {"role": "assistant", "content": "x = 5"}]
    r = vane.post(chat_body(MATH))
    assert r.header("x-vane-model") == "math-model", r
    # Same transcript from another tenant: no memory of the first one's model, so it is
    # classified afresh (the earlier maths turn still counts, by embedding, not by memory).
    other = vane.post(chat_body("When did the First World War begin?", history=history), api_key=vane.api_key + "-other")
    mine = vane.post(chat_body("When did the First World War begin?", history=history))
    assert mine.header("x-vane-model") == "math-model", mine  # sticky: my conversation was on math-model
    assert other.status == 200 and other.header("x-vane-model") in ("math-model", "general-model"), other
