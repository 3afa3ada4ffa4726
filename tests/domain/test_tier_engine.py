"""The set-based tier engine on a real database (SQLite, or PostgreSQL with DATABASE_URL):
the counting boundaries in SQL, fast up / slow down, drops, history, notifications,
idempotency, and a property test against the pure functions of bot.domain.tiers."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import count

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from bot.domain.tier_engine import recompute
from bot.domain.tiers import counts_until, decide, evaluate, is_review_day, weighted_value
from models import Customer, Notification, Policy, TierHistory, WechatUser
from tests.support.tiers import DAY, RULES, P
from tests.support.tier_engine import Book, SINGLE, customer_t, history_t, notification_t, policies, policy_t, some_date  # noqa: F401

NOW = datetime(2025, 3, 17, 2, 30, tzinfo=timezone.utc)


@pytest.fixture
def book(engine):
    return Book(engine)


def run(engine, on: date, ids=None):
    return recompute(engine, RULES, on, ids, now=NOW)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --- Counting boundaries, in SQL -----------------------------------------------------------

LEAP = P(effective_date=date(2020, 2, 29), cooling_off_end_date=date(2020, 3, 15), payment_years=2)
LEAP_TO_LEAP = replace(LEAP, payment_years=5)
EARLY = P(cooling_off_end_date=date(2019, 12, 31))

BOUNDARIES = [
    ("last cooling-off day", P(), date(2020, 1, 25), False),
    ("day after cooling-off", P(), date(2020, 1, 26), True),
    ("day before effective", EARLY, date(2020, 1, 9), False),
    ("effective day", EARLY, date(2020, 1, 10), True),
    ("pledged", P(pledged=True), date(2021, 1, 1), False),
    ("policy loan", P(policy_loan=True), date(2021, 1, 1), False),
    ("lapsed", P(status="lapsed"), date(2021, 1, 1), False),
    ("surrendered", P(status="surrendered"), date(2021, 1, 1), False),
    ("terminated", P(status="terminated"), date(2021, 1, 1), False),
    ("matured", P(status="matured"), date(2021, 1, 1), False),
    ("first tail day", P(), date(2025, 1, 10), True),
    ("last tail day", P(), date(2028, 1, 9), True),
    ("day after the tail", P(), date(2028, 1, 10), False),
    ("single: last day of 1 + 3 years", SINGLE, date(2024, 1, 9), True),
    ("single: day after 1 + 3 years", SINGLE, date(2024, 1, 10), False),
    ("29 Feb: last day", LEAP, date(2025, 2, 27), True),
    ("29 Feb: anniversary on 28 Feb", LEAP, date(2025, 2, 28), False),
    ("29 Feb to a leap year: last day", LEAP_TO_LEAP, date(2028, 2, 28), True),
    ("29 Feb to a leap year: anniversary", LEAP_TO_LEAP, date(2028, 2, 29), False),
]


@pytest.mark.parametrize("policy,on,counted", [b[1:] for b in BOUNDARIES],
                         ids=[b[0] for b in BOUNDARIES])
def test_counting_boundary(book, engine, policy, on, counted):
    cid = book.customer(policy)
    run(engine, on)
    assert evaluate([policy], on, RULES).lines[0].counted is counted
    assert book.get(cid).contribution == (weighted_value(policy, RULES) if counted else 0)


@pytest.mark.parametrize("threshold,tier,below", [
    ("1000000", "diamond", "platinum"), ("300000", "platinum", "gold"),
    ("100000", "gold", "pearl"), ("30000", "pearl", "mass")])
def test_contribution_at_each_threshold_and_one_fen_below(book, engine, threshold, tier, below):
    at = book.customer(P(annualized_basic_premium=Decimal(threshold)))
    under = book.customer(P(annualized_basic_premium=Decimal(threshold) - Decimal("0.01")))
    # weighted at 10%: 10 × (threshold − 0.01) falls 0.001 short, which must not round up
    single = book.customer(replace(SINGLE, single_premium=Decimal(threshold) * 10 - Decimal("0.01")))
    run(engine, date(2021, 1, 1))
    assert (book.get(at).tier, book.get(at).contribution) == (tier, Decimal(threshold))
    assert (book.get(under).tier, book.get(under).contribution) == (
        below, Decimal(threshold) - Decimal("0.01"))
    assert (book.get(single).tier, book.get(single).contribution) == (
        below, Decimal(threshold) - Decimal("0.01"))


# --- Fast up, slow down ---------------------------------------------------------------------


def test_upgrade_on_an_arbitrary_day(book, engine):
    day = date(2025, 3, 17)
    cid = book.customer(P(annualized_basic_premium=Decimal("150000.50")),
                        P(annualized_basic_premium=Decimal(0), single_premium=Decimal("200000.00"),
                          payment_mode="single", effective_date=date(2025, 3, 1), cooling_off_end_date=date(2025, 3, 16)),
                        evaluated=date(2025, 3, 16))
    report = run(engine, day)
    assert (report.upgrades, report.downgrades, report.drops, report.unchanged) == (1, 0, 0, 0)
    row = book.get(cid)
    assert (row.tier, row.tier_since, row.contribution, row.evaluated_on) == (
        "gold", day, Decimal("170000.50"), day)
    [entry] = book.rows(history_t, cid)
    assert (entry.from_tier, entry.to_tier, entry.reason, entry.contribution,
            entry.effective_date) == ("mass", "gold", "upgrade", Decimal("170000.50"), day)
    assert aware(entry.changed_at) == NOW
    [note] = book.rows(notification_t, cid)
    assert (note.kind, note.status, note.dedupe_key) == (
        "tier_changed", "pending", f"tier:{cid}:{day}:gold")
    assert json.loads(note.payload) == {"from": "mass", "to": "gold", "reason": "upgrade",
                                        "effective_date": "2025-03-17"}
    assert aware(note.created_at) == NOW


def test_a_second_run_the_same_day_changes_nothing(book, engine):
    book.customer(P(annualized_basic_premium=Decimal("40000")))
    book.customer(P(annualized_basic_premium=Decimal("2000000")), tier="gold")
    book.customer(P(status="lapsed"), tier="diamond")
    book.customer()
    first = run(engine, date(2025, 6, 30))
    assert (first.upgrades, first.downgrades, first.drops, first.unchanged) == (2, 0, 1, 1)
    before = book.snapshot()
    second = run(engine, date(2025, 6, 30))
    assert (second.evaluated, second.unchanged) == (4, 4)
    assert book.snapshot() == before


def test_every_customer_is_stamped_each_day(book, engine):
    ids = [book.customer(), book.customer(P(status="lapsed")),
           book.customer(P(annualized_basic_premium=Decimal("40000")))]
    for day in (date(2025, 3, 17), date(2025, 3, 18)):
        run(engine, day)
        assert [(book.get(c).evaluated_on, book.get(c).contribution) for c in ids] == [
            (day, 0), (day, 0), (day, Decimal("40000.00"))]


def test_a_change_is_never_queued_twice_for_the_same_day(book, engine):
    cid = book.customer(P(annualized_basic_premium=Decimal("40000")), evaluated=date(2025, 3, 16))
    run(engine, date(2025, 3, 17))
    with engine.begin() as c:  # e.g. someone put the customer back by hand
        c.execute(update(customer_t).values(tier="mass"))
    run(engine, date(2025, 3, 17))
    assert len(book.rows(history_t, cid)) == 2
    assert len(book.rows(notification_t, cid)) == 1


@pytest.mark.parametrize("fall,review", [(date(2025, 3, 12), date(2025, 6, 30)),
                                         (date(2025, 8, 1), date(2025, 12, 31))])
def test_downgrade_waits_for_the_review(book, engine, fall, review):
    cid = book.customer(P(annualized_basic_premium=Decimal("1000000")),
                        P(annualized_basic_premium=Decimal("40000"), policy_no="SMALL"))
    run(engine, fall - DAY)
    assert book.get(cid).tier == "diamond"
    with engine.begin() as c:  # the big policy is pledged
        c.execute(update(policy_t).where(policy_t.c.annualized_basic_premium > 500000)
                  .values(pledged=True))
    for day in (fall, fall + DAY, review - DAY):
        report = run(engine, day)
        assert (report.downgrades, book.get(cid).tier, book.get(cid).contribution) == (
            0, "diamond", Decimal("40000.00"))
    report = run(engine, review)
    assert report.downgrades == 1 and report.review_day
    row = book.get(cid)
    assert (row.tier, row.tier_since, row.evaluated_on) == ("pearl", review + DAY, review)
    last = book.rows(history_t, cid)[-1]
    assert (last.from_tier, last.to_tier, last.reason, last.effective_date) == (
        "diamond", "pearl", "review_downgrade", review + DAY)
    assert book.rows(notification_t, cid)[-1].dedupe_key == f"tier:{cid}:{review + DAY}:pearl"
    assert run(engine, review + DAY).downgrades == 0


def test_last_in_force_policy_ending_drops_at_once(book, engine):
    cid = book.customer(P(annualized_basic_premium=Decimal("300000")), P(status="lapsed"))
    run(engine, date(2025, 4, 9))
    assert book.get(cid).tier == "platinum"
    book.set_policies(cid, status="surrendered")
    report = run(engine, date(2025, 4, 10))
    assert report.drops == 1
    row = book.get(cid)
    assert (row.tier, row.tier_since, row.contribution) == ("mass", date(2025, 4, 10), 0)
    last = book.rows(history_t, cid)[-1]
    assert (last.reason, last.effective_date) == ("no_policy_drop", date(2025, 4, 10))


def test_an_in_force_policy_out_of_its_window_waits_for_the_review(book, engine):
    cid = book.customer(P(annualized_basic_premium=Decimal("300000")))  # counts to 2028-01-09
    run(engine, date(2028, 1, 9))
    report = run(engine, date(2028, 1, 10))
    assert (report.drops, report.downgrades, book.get(cid).tier) == (0, 0, "platinum")
    assert book.get(cid).contribution == 0
    assert run(engine, date(2028, 6, 30)).downgrades == 1


def test_only_the_given_customers(book, engine):
    a = book.customer(P(annualized_basic_premium=Decimal("40000")))
    b = book.customer(P(annualized_basic_premium=Decimal("40000")))
    report = run(engine, date(2025, 3, 17), [a])
    assert (report.evaluated, report.upgrades) == (1, 1)
    assert (book.get(a).tier, book.get(b).tier, book.get(b).evaluated_on) == ("pearl", "mass", None)
    assert run(engine, date(2025, 3, 17), []).evaluated == 0


def test_a_tier_the_rules_no_longer_know_is_replaced(book, engine):
    cid = book.customer(P(annualized_basic_premium=Decimal("40000")), tier="silver")
    run(engine, date(2025, 3, 17))
    assert book.get(cid).tier == "pearl"


def test_report_renders_one_summary(book, engine):
    book.customer(P(annualized_basic_premium=Decimal("40000")))
    text = run(engine, date(2025, 12, 31)).render()
    assert text == ("Tiers as of 2025-12-31 (downgrade review): 1 customers evaluated; "
                    "1 upgraded, 0 downgraded at the review, 0 dropped with no policy in force, "
                    "0 unchanged.")


def test_cli_tiers_recompute(book, db_url, monkeypatch):
    from typer.testing import CliRunner

    from bot.cli import app
    from tests.conftest import APP_ID, APP_SECRET, TOKEN

    cid = book.customer(P(annualized_basic_premium=Decimal("40000")))
    env = {"DATABASE_URL": db_url, "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": APP_SECRET,
           "WECHAT_TOKEN": TOKEN, "REDIS_URL": "", "SECRET_KEY": "cli-secret-key-0123456789"}
    result = CliRunner().invoke(app, ["tiers", "recompute", "--date", "2025-03-17"], env=env)
    assert result.exit_code == 0, result.output
    assert "Tiers as of 2025-03-17" in result.output and "1 upgraded" in result.output
    assert book.get(cid).tier == "pearl"


# --- The SQL engine agrees with the pure functions -------------------------------------------


def boundaries(p: P) -> list[date]:
    end = counts_until(p, RULES)
    return [p.cooling_off_end_date, p.cooling_off_end_date + DAY, p.effective_date - DAY,
            p.effective_date, end, end + DAY]


book_strategy = st.lists(st.tuples(st.sampled_from([t.code for t in RULES.tiers]),
                                   st.lists(policies(), max_size=4)), min_size=1, max_size=4)


@hypothesis_settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(customers=book_strategy, data=st.data())
def test_sql_agrees_with_the_pure_functions(book, engine, customers, data):
    candidates = [d for _, ps in customers for p in ps for d in boundaries(p)]
    candidates += [date(2024, 6, 30), date(2025, 12, 31)]
    on = data.draw(st.one_of(st.sampled_from(candidates), some_date), label="on")
    book.clear()
    ids = [book.customer(*ps, tier=held) for held, ps in customers]
    run(engine, on)
    for cid, (held, ps) in zip(ids, customers):
        expected = evaluate(ps, on, RULES)
        change = decide(held, expected.tier, in_force=expected.in_force,
                        review_day=is_review_day(on, RULES), rules=RULES)
        row = book.get(cid)
        assert row.contribution == expected.total
        assert row.tier == (change.tier if change else held)
        assert len(book.rows(history_t, cid)) == (1 if change else 0)


# --- Tier-change notices: only real changes of bound, following customers -----------------


def test_notices_only_for_bound_following_customers_and_real_changes(book, engine):
    day = date(2025, 3, 17)
    big = P(annualized_basic_premium=Decimal("150000"))
    seen = date(2025, 3, 16)
    bound = book.customer(big, evaluated=seen)
    unbound = book.customer(big, evaluated=seen, bound=False)
    left = book.customer(big, evaluated=seen, following=False)
    first = book.customer(big)  # never evaluated: moving off the default 大众 is no news
    report = run(engine, day)
    assert report.upgrades == 4
    notes = book.rows(notification_t)
    assert [(n.customer_id, n.recipient, n.channel, n.status) for n in notes] == [
        (bound, f"o_tier_{bound}", "wechat", "pending")]
    assert notes[0].expires_at == pytest.approx(NOW.timestamp() + 3 * 86400)
    assert {unbound, left, first}.isdisjoint({n.customer_id for n in notes})
