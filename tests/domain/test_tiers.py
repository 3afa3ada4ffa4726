"""The tier rules as pure functions: each counting rule at its boundary, the contribution to the
fen, and fast up / slow down across the reviews."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.rules import load_rules
from bot.domain.tiers import (Change, add_years, counts_until, date_key, decide, effective_date,
                       evaluate, is_review_day, line_for, next_review_date, window_key)
from tests.support.tiers import DAY, E, P, RULES  # noqa: F401


def line(policy: P, on: date):
    return line_for(policy, on, RULES)


# --- Counting, rule by rule ------------------------------------------------------------------


def test_cooling_off_end_date_is_the_last_day_not_counted():
    assert line(P(), date(2020, 1, 25)).reason == "cooling_off"
    counted = line(P(), date(2020, 1, 26))
    assert counted.counted and counted.reason == "counted"
    assert counted.amount == Decimal("50000.00")


def test_not_yet_effective():
    assert line(P(), E - DAY).reason == "not_yet_effective"
    # a cooling-off period ended before the effective date: counts from the effective date
    early = P(cooling_off_end_date=E - 10 * DAY)
    assert line(early, E - DAY).reason == "not_yet_effective"
    assert line(early, E).counted


@pytest.mark.parametrize("status", ["lapsed", "surrendered", "terminated", "matured"])
def test_each_status_but_in_force_does_not_count(status):
    result = line(P(status=status), date(2021, 1, 1))
    assert (result.counted, result.reason, result.amount) == (False, f"not_in_force:{status}", 0)


def test_pledge_and_loan_do_not_count():
    assert line(P(pledged=True), date(2021, 1, 1)).reason == "pledged"
    assert line(P(policy_loan=True), date(2021, 1, 1)).reason == "policy_loan"


def test_regular_counts_to_the_day_before_effective_plus_payment_plus_three_years():
    policy = P(payment_years=5)  # paid 2020-01-10 .. 2025-01-09, tail to 2028-01-09
    last = line(policy, date(2028, 1, 9))
    assert last.counted and last.counts_until == date(2028, 1, 9)
    assert line(policy, date(2025, 1, 10)).counted  # first day after the payment period
    assert line(policy, date(2028, 1, 10)).reason == "period_ended"


@pytest.mark.parametrize("payment_years", [0, 1, 10])
def test_single_premium_counts_for_one_plus_three_years(payment_years):
    policy = P(payment_mode="single", payment_years=payment_years,
               annualized_basic_premium=Decimal(0), single_premium=Decimal("300000.00"))
    last = line(policy, date(2024, 1, 9))
    assert last.counted and last.amount == Decimal("30000.00")
    assert counts_until(policy, RULES) == date(2024, 1, 9)
    assert line(policy, date(2024, 1, 10)).reason == "period_ended"


def test_29_february_anniversary_is_28_february():
    policy = P(effective_date=date(2020, 2, 29), cooling_off_end_date=date(2020, 3, 15),
               payment_years=2)  # 2020-02-29 + 5 years = 2025-02-28
    assert counts_until(policy, RULES) == date(2025, 2, 27)
    assert line(policy, date(2025, 2, 27)).counted
    assert line(policy, date(2025, 2, 28)).reason == "period_ended"
    leap = replace(policy, payment_years=5)  # + 8 years = 2028-02-29, a leap day
    assert counts_until(leap, RULES) == date(2028, 2, 28)


def test_add_years():
    assert add_years(date(2020, 2, 29), 1) == date(2021, 2, 28)
    assert add_years(date(2020, 2, 29), 4) == date(2024, 2, 29)
    assert add_years(date(2021, 3, 1), 3) == date(2024, 3, 1)
    assert add_years(date(2019, 12, 31), 1) == date(2020, 12, 31)


@given(st.dates(date(1990, 1, 1), date(2060, 12, 31)), st.dates(date(1990, 1, 1), date(2060, 12, 31)),
       st.integers(0, 40))
def test_window_key_matches_date_arithmetic(effective, on, years):
    assert (on < add_years(effective, years)) == (date_key(effective) + years * 10000 > window_key(on))


@given(st.sampled_from([date(2000, 2, 29), date(2020, 2, 29), date(2021, 2, 28), date(2021, 3, 1)]),
       st.integers(0, 12), st.integers(-3, 3))
def test_window_key_at_the_leap_day(effective, years, shift):
    on = add_years(effective, years) + shift * DAY
    assert (on < add_years(effective, years)) == (date_key(effective) + years * 10000 > window_key(on))


# --- The contribution value --------------------------------------------------------------


def test_weights_and_sum_over_counting_policies():
    on = date(2021, 1, 1)
    policies = [
        P("A", annualized_basic_premium=Decimal("12345.67"), single_premium=Decimal("1000.00"),
          annual_regular_topup=Decimal("2000.00"), initial_lump_sum_topup=Decimal("3000.00"),
          irregular_topup=Decimal("4000.00")),
        P("B", annualized_basic_premium=Decimal("1000.00"), pledged=True),
        P("C", annualized_basic_premium=Decimal("0.01"), single_premium=Decimal("0.09")),
    ]
    result = evaluate(policies, on, RULES)
    assert [(x.policy_no, x.counted, x.reason, x.amount) for x in result.lines] == [
        ("A", True, "counted", Decimal("13345.67")), ("B", False, "pledged", Decimal(0)),
        ("C", True, "counted", Decimal("0.019"))]
    assert result.total == Decimal("13345.68")  # 13345.689, cut to the fen
    assert result.tier == "mass" and result.in_force


def test_total_is_never_rounded_up():
    single = P(payment_mode="single", annualized_basic_premium=Decimal(0),
               single_premium=Decimal("299999.99"))
    result = evaluate([single], date(2021, 1, 1), RULES)
    assert result.total == Decimal("29999.99") and result.tier == "mass"


@pytest.mark.parametrize("threshold,tier,below", [
    ("1000000", "diamond", "platinum"), ("300000", "platinum", "gold"),
    ("100000", "gold", "pearl"), ("30000", "pearl", "mass")])
def test_contribution_at_each_threshold_and_one_fen_below(threshold, tier, below):
    on = date(2021, 1, 1)
    at = evaluate([P(annualized_basic_premium=Decimal(threshold))], on, RULES)
    under = evaluate([P(annualized_basic_premium=Decimal(threshold) - Decimal("0.01"))], on, RULES)
    assert (at.total, at.tier) == (Decimal(threshold), tier)
    assert (under.total, under.tier) == (Decimal(threshold) - Decimal("0.01"), below)
    split = evaluate([P("A", annualized_basic_premium=Decimal(threshold) / 2),
                      P("B", annualized_basic_premium=Decimal(threshold) / 2)], on, RULES)
    assert split.tier == tier


def test_no_policies_and_no_policy_in_force():
    none = evaluate([], date(2021, 1, 1), RULES)
    assert (none.total, none.tier, none.in_force, none.lines) == (0, "mass", False, ())
    ended = evaluate([P(status="surrendered")], date(2021, 1, 1), RULES)
    assert not ended.in_force
    # in force but out of its window: not counted, still in force
    old = evaluate([P()], date(2030, 1, 1), RULES)
    assert (old.total, old.in_force) == (0, True)


# --- Reviews and decisions ---------------------------------------------------------------


@pytest.mark.parametrize("day,review", [
    (date(2025, 6, 30), True), (date(2025, 12, 31), True), (date(2025, 6, 29), False),
    (date(2025, 7, 1), False), (date(2026, 1, 1), False), (date(2024, 12, 30), False)])
def test_is_review_day(day, review):
    assert is_review_day(day, RULES) is review


@pytest.mark.parametrize("day,review", [
    (date(2025, 1, 1), date(2025, 6, 30)), (date(2025, 6, 30), date(2025, 6, 30)),
    (date(2025, 7, 1), date(2025, 12, 31)), (date(2025, 12, 31), date(2025, 12, 31)),
    (date(2026, 1, 1), date(2026, 6, 30))])
def test_next_review_date(day, review):
    assert next_review_date(day, RULES) == review


@pytest.mark.parametrize("held,computed,in_force,review,expected", [
    ("mass", "gold", True, False, Change("gold", "upgrade")),
    ("pearl", "diamond", True, True, Change("diamond", "upgrade")),
    ("gold", "gold", True, True, None),
    ("gold", "pearl", True, False, None),
    ("gold", "pearl", True, True, Change("pearl", "review_downgrade")),
    ("diamond", "mass", False, False, Change("mass", "no_policy_drop")),
    ("diamond", "mass", False, True, Change("mass", "no_policy_drop")),
    ("mass", "mass", False, False, None),
    ("silver", "mass", True, False, Change("mass", "upgrade")),  # a code no longer in the rules
])
def test_decide(held, computed, in_force, review, expected):
    assert decide(held, computed, in_force=in_force, review_day=review, rules=RULES) == expected


def test_effective_date():
    assert effective_date("upgrade", date(2025, 6, 30)) == date(2025, 6, 30)
    assert effective_date("no_policy_drop", date(2025, 4, 10)) == date(2025, 4, 10)
    assert effective_date("review_downgrade", date(2025, 6, 30)) == date(2025, 7, 1)
    assert effective_date("review_downgrade", date(2025, 12, 31)) == date(2026, 1, 1)


def run_days(policies_on, held: str, start: date, end: date) -> dict[date, tuple[str, str | None]]:
    """The daily job, pure: the tier held at the end of each day and the change that day."""
    days = {}
    day = start
    while day <= end:
        result = evaluate(policies_on(day), day, RULES)
        change = decide(held, result.tier, in_force=result.in_force,
                        review_day=is_review_day(day, RULES), rules=RULES)
        if change:
            held = change.tier
        days[day] = (held, change and change.reason)
        day += DAY
    return days


@pytest.mark.parametrize("fall,review", [(date(2025, 3, 12), date(2025, 6, 30)),
                                         (date(2025, 8, 1), date(2025, 12, 31))])
def test_slow_down_waits_for_the_review(fall, review):
    big = P("A", annualized_basic_premium=Decimal("1000000"))
    small = P("B", annualized_basic_premium=Decimal("40000"))
    days = run_days(lambda d: [replace(big, pledged=d >= fall), small], "diamond",
                    fall - 10 * DAY, review + 2 * DAY)
    assert days[fall] == ("diamond", None)
    assert days[review - DAY] == ("diamond", None)
    assert days[review] == ("pearl", "review_downgrade")
    assert days[review + DAY] == ("pearl", None)


def test_fast_up_on_any_day():
    arrives = date(2025, 3, 17)
    policy = P(annualized_basic_premium=Decimal("300000"), effective_date=date(2025, 3, 1),
               cooling_off_end_date=arrives - DAY)
    days = run_days(lambda d: [policy], "mass", date(2025, 3, 1), date(2025, 3, 20))
    assert days[arrives - DAY] == ("mass", None)
    assert days[arrives] == ("platinum", "upgrade")


def test_last_policy_ending_drops_at_once():
    surrendered = date(2025, 4, 10)
    policy = P(annualized_basic_premium=Decimal("300000"))
    days = run_days(lambda d: [replace(policy, status="surrendered" if d >= surrendered
                                       else "in_force")], "platinum",
                    date(2025, 4, 1), date(2025, 4, 12))
    assert days[surrendered - DAY] == ("platinum", None)
    assert days[surrendered] == ("mass", "no_policy_drop")
