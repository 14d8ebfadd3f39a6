"""Prompts the encoder cannot read, or not all of: the semantic cache never answers them.

MiniLM's vocabulary lacks most Chinese characters, kana, hangul and emoji: 秦朝是哪一年建立的 and
唐朝是哪一年建立的 both become "[UNK] 朝 [UNK] [UNK] 一 年 [UNK] 立 的 ？" and embed identically.
The characters it does know it never learned to read either: MiniLM is English-only
(`model.languages: [en]`), so a prompt in another language is not matched on its embedding at all.
And it reads only the first 256 tokens, so a long document with another question at its end
embeds like the first. Each second question below must miss and reach a model; an identical
repeat is still an exact hit."""
from __future__ import annotations

import re

import pytest

from helpers import admin_request
from stack import config_variant

# (cached, asked, whether the encoder could read so little of the first that it is routed to
# the default model: routing.max_unknown_share is 0.2, the cache's 0; any language but English).
PAIRS = [
    # The four pairs of the bug report (similarity 1.0000, 1.0000, 0.9943 and 0.9635 before).
    ("秦朝是哪一年建立的？", "唐朝是哪一年建立的？", True),
    ("我应该如何治疗感冒？", "我应该如何治疗失眠？", True),
    ("猫为什么喜欢睡觉？", "狗为什么喜欢啃骨头？", True),
    ("北京是哪个国家的首都？", "东京是哪个国家的首都？", True),
    # Japanese, kanji and kana: MiniLM knows more of these (unknown shares 0.06 and 0.14).
    ("富士山の高さはどれくらいですか？", "東京タワーの高さはどれくらいですか？", True),
    ("すしの作り方を教えてください", "てんぷらの作り方を教えてください", True),
    # Every character in MiniLM's vocabulary, and other Latin-script languages.
    ("中国的首都是哪里？", "中国的首都是上海吗？", True),
    ("Quelle est la capitale de la France ?", "Quelle est la capitale de l'Allemagne ?", True),
    ("Какая столица Франции?", "Какая столица Германии?", True),
    # Emoji only.
    ("🐱🍣❓", "🐶🍕❓", True),
    ("🎂🎉", "🎂🎉🎉", True),
    # The same question reworded: the guard lets it pass, the encoder cannot vouch for it.
    ("秦朝是哪一年建立的？", "秦朝哪年建立？", True),
]

DOC = " ".join(f"Section {i}: the quarterly report describes revenue, costs, hiring and the outlook for the region."
               for i in range(18))  # ~280 words, ~310 tokens: past the encoder's 256-token window


def lookups(vane, result: str) -> int:
    pattern = rf'^vane_cache_lookups_total\{{[^}}]*result="{result}"[^}}]*tier="semantic"[^}}]*\}} (\d+)|' \
              rf'^vane_cache_lookups_total\{{[^}}]*tier="semantic"[^}}]*result="{result}"[^}}]*\}} (\d+)'
    return sum(int(a or b) for a, b in re.findall(pattern, vane.get_metrics_text(), re.M))


@pytest.mark.parametrize("cached, asked, unreadable", PAIRS)
def test_a_second_question_the_encoder_cannot_read_is_not_served_the_first_answer(vane, cached, asked, unreadable):
    first = vane.chat_stored(cached)
    if unreadable:  # not a head's guess from [UNK] tokens
        assert (first.header("x-vane-category"), first.header("x-vane-model")) == ("default", "general-model"), first

    second = vane.chat(asked)
    assert second.status == 200 and second.cache == "miss", second
    assert second.header("x-mock-upstream") is not None, second
    assert asked in second.content, second  # the upstream answered this question

    repeat = vane.chat(cached)
    assert repeat.cache == "hit" and float(repeat.header("x-vane-similarity")) == 1.0, repeat
    assert repeat.body == first.body
    assert vane.upstream_count() == 2


def test_the_miss_is_counted_with_its_reason(vane):
    vane.chat_stored("秦朝是哪一年建立的？")
    skipped = lookups(vane, "unknown_tokens")
    assert vane.chat("唐朝是哪一年建立的？").cache == "miss"
    assert lookups(vane, "unknown_tokens") == skipped + 1


def test_a_prompt_in_a_language_the_encoder_does_not_read_is_skipped_for_that_reason(vane):
    # Every token of both is in MiniLM's vocabulary: only the language tells that it cannot vouch.
    vane.chat_stored("東京タワーの高さはどれくらいですか？")
    skipped = lookups(vane, "language")
    r = vane.chat("京都タワーの高さはどれくらいですか？")
    assert r.cache == "miss" and r.header("x-mock-upstream") is not None, r
    assert lookups(vane, "language") == skipped + 1
    assert r.header("x-vane-language") == "ja", r


def test_a_readable_prompt_still_gets_semantic_hits(vane):
    vane.chat_stored("Who was the first emperor of Rome?")
    assert vane.chat("Who was Rome's first emperor?").cache == "hit"


def test_a_long_document_with_another_question_at_its_end_is_a_miss(make_stack, tmp_path):
    # Its own stack with generous time limits: the jailbreak windows over ~280 words take a debug
    # sidecar on a slow 2-core machine past the default 120 ms deadline / 200 ms filter timeout,
    # and a refusal or a fallback is no answer. What is tested is the cache.
    config = config_variant(tmp_path / "vane.yaml", "jailbreak-long")
    vane = make_stack(sidecar_config=config, filter_config={"timeout_ms": 5000})
    first = vane.chat_stored(f"{DOC}\nSummarise the outlook in one sentence.")
    skipped = lookups(vane, "truncated")  # after the store: chat_stored's probes may count too
    second = vane.chat(f"{DOC}\nList every cost mentioned.")
    assert second.status == 200 and second.cache == "miss", second
    assert "List every cost mentioned." in second.content, second
    assert lookups(vane, "truncated") == skipped + 1
    repeat = vane.chat(f"{DOC}\nSummarise the outlook in one sentence.")
    assert repeat.cache == "hit" and repeat.body == first.body, repeat


def test_classify_reports_what_the_encoder_read(vane):
    status, got = admin_request(vane.stack, "/v1/classify",
                                {"texts": ["秦朝是哪一年建立的？", "What is the integral of x squared?"]})
    assert status == 200, got
    chinese, english = got["results"]
    assert chinese["reading"]["semantic_cache"] == "unknown_tokens", chinese
    assert chinese["reading"]["unknown_share"] > 0.3, chinese
    assert chinese["reading"]["foreign_language"] is True, chinese
    assert (chinese["category"], chinese["source"], chinese["model"]) == ("default", "unreadable", "general-model"), chinese
    assert (chinese["language"], english["language"]) == ("zh", "en")
    assert english["reading"] == {"tokens": english["reading"]["tokens"], "unknown_tokens": 0, "unknown_share": 0.0,
                                  "truncated": False, "foreign_language": False, "semantic_cache": "eligible"}, english
    assert english["category"] == "math", english
