"""Emergency detection: recall must be 100% on the labelled emergencies and there must be no
false positive on the labelled non-emergencies (each item is asserted on its own)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.conversation.emergency import is_emergency, matches
from bot.infra.texts import render
from tests.support import ROOT

CASES = tomllib.loads((ROOT / "tests" / "emergency_labelled.toml").read_text("utf-8"))
EMERGENCY: list[str] = CASES["emergency"]
NOT_EMERGENCY: list[str] = CASES["not_emergency"]
HELD_OUT: list[str] = CASES["held_out_emergency"]
HELD_OUT_NOT: list[str] = CASES["held_out_not_emergency"]


def test_sets_are_big_enough():
    assert len(EMERGENCY) >= 30 and len(NOT_EMERGENCY) >= 15


@pytest.mark.parametrize("text", EMERGENCY)
def test_emergency_is_detected(text):
    assert is_emergency(text), text


@pytest.mark.parametrize("text", HELD_OUT)
def test_held_out_emergency_is_detected(text):
    assert is_emergency(text), text


@pytest.mark.parametrize("text", HELD_OUT_NOT)
def test_held_out_look_alike_is_not_an_emergency(text):
    assert not is_emergency(text), (text, matches(text))


@pytest.mark.parametrize("text", NOT_EMERGENCY)
def test_not_emergency(text):
    assert not is_emergency(text), (text, matches(text))


def test_rates(capsys):
    recall = sum(map(is_emergency, EMERGENCY)) / len(EMERGENCY)
    false_positives = [t for t in NOT_EMERGENCY if is_emergency(t)]
    fp_rate = len(false_positives) / len(NOT_EMERGENCY)
    with capsys.disabled():
        print(f"\nemergency recall {recall:.0%} ({len(EMERGENCY)}), "
              f"false positives {fp_rate:.0%} ({len(NOT_EMERGENCY)}): {false_positives}")
    assert recall == 1.0
    assert false_positives == []


@pytest.mark.parametrize("text", ["120", "快打120", "要不要打120", "120!", "打 120 吗"])
def test_120_standing_alone(text):
    assert is_emergency(text)


@pytest.mark.parametrize("text", ["1200", "120万", "0120", "1201", "120.5", "保单号120",
                                  "120元", "138-120-5678", "尾号120", "120块"])
def test_120_inside_a_number_or_an_amount(text):
    assert not is_emergency(text)


def test_digits_never_count_at_a_digits_step():
    assert not is_emergency("120", digits_step=True)
    assert not is_emergency("１２０", digits_step=True)
    # words still count at such a step
    assert is_emergency("胸口疼得厉害", digits_step=True)


def test_distress_is_never_excluded():
    assert is_emergency("去年就想自杀，现在也是")
    assert is_emergency("之前割腕过")


def test_other_hits_still_count_next_to_an_exclusion():
    assert is_emergency("急诊科的专家能约吗？我爸现在胸痛")
    assert is_emergency("我妈去年中风了，今天又晕倒了")


def test_template_says_120_emergency_and_hotline():
    text = render("emergency")
    assert "120" in text and "急诊" in text and "95359" in text and "专家门诊" in text
