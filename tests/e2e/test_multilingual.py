"""The multilingual encoder (config/vane-multilingual.yaml, multilingual-e5-small) through Envoy.

One stack for the module: the sidecar loads the E5 export (models/build/e5/, `make models`) and
the heads trained over it. Chinese is read, routed by topic and served from the semantic tier,
at the thresholds chosen for it by `make cache-eval-e5`; a different Chinese question is never
served another's answer, and an answer is never served to a question in another language.
"""
from __future__ import annotations

import pytest
import yaml

from conftest import running_stack
from helpers import Vane
from stack import CONFIG, config_variant

MULTILINGUAL = CONFIG.parent / "vane-multilingual.yaml"


@pytest.fixture(scope="module")
def e5_stack(tmp_path_factory):
    variant = yaml.safe_load(MULTILINGUAL.read_text())
    assert variant.pop("extends") == CONFIG.name
    config = config_variant(tmp_path_factory.mktemp("e5") / "vane.yaml", variant)
    with running_stack(sidecar_config=config, log_dir=tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture
def e5(e5_stack, request):
    from conftest import _handle

    v: Vane = _handle(e5_stack, request)
    yield v
    v.assert_no_crash()


# Reworded, same question: served from the cache (similarities 0.987, 0.997, 0.998 against the
# Chinese threshold 0.97).
PARAPHRASES = [
    ("怎么煮米饭才不会糊？", "煮米饭怎样才能不糊锅？"),
    ("如何提高睡眠质量？", "怎样才能提高睡眠质量？"),
    ("Python里什么是装饰器？", "Python中的装饰器是什么？"),
]

# Another question in the same words: never served the first one's answer.
DIFFERENT = [
    ("秦朝是哪一年建立的？", "唐朝是哪一年建立的？"),  # one character swapped
    ("我应该如何治疗感冒？", "我应该如何治疗失眠？"),
    ("北京是哪个国家的首都？", "东京是哪个国家的首都？"),
    ("怎么打开蓝牙？", "怎么关闭蓝牙？"),  # opposites 开/关
    ("这种药可以和酒一起吃吗？", "这种药不可以和酒一起吃吗？"),  # negation
    ("三个苹果多少钱？", "五个苹果多少钱？"),  # numbers
    ("摄氏度怎么转换成华氏度？", "华氏度怎么转换成摄氏度？"),  # direction (similarity 0.999)
    ("猫为什么喜欢睡觉？", "狗为什么喜欢啃骨头？"),
]


@pytest.mark.parametrize("cached, asked", PARAPHRASES)
def test_a_reworded_chinese_question_is_served_from_the_cache(e5, cached, asked):
    first = e5.chat_stored(cached)
    assert first.header("x-vane-language") == "zh", first
    r = e5.chat(asked)
    assert r.status == 200 and r.cache == "hit", r
    assert r.body == first.body
    assert float(r.header("x-vane-similarity")) < 1.0, r  # the semantic tier, not an exact repeat


@pytest.mark.parametrize("cached, asked", DIFFERENT)
def test_a_different_chinese_question_is_never_served_another_answer(e5, cached, asked):
    e5.chat_stored(cached)
    r = e5.chat(asked)
    assert r.status == 200 and r.cache == "miss", r
    assert asked in r.content, r  # the upstream answered this question
    assert e5.chat(cached).cache == "hit"


def test_an_answer_is_not_served_to_its_translation(e5):
    e5.chat_stored("How do I reset my password?")
    r = e5.chat("我怎么重置密码？")
    assert r.status == 200 and r.cache == "miss", r
    assert r.header("x-vane-language") == "zh", r


def test_chinese_is_routed_by_topic(e5):
    r = e5.chat("求函数 f(x) = x³ − 3x 在区间 [0, 2] 上的最大值和最小值。")
    assert r.status == 200, r
    assert (r.header("x-vane-category"), r.header("x-vane-model")) == ("math", "math-model"), r
    assert r.header("x-vane-language") == "zh", r


def test_english_still_hits_on_a_paraphrase(e5):
    e5.chat_stored("What is the capital of France?")
    r = e5.chat("Which city is the capital of France?")
    assert r.status == 200 and r.cache == "hit", r
