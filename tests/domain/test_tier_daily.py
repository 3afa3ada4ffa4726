"""The daily tier job evaluates only the customers with an event since its last run, and ends
where a full recompute would: each event at both sides of its day (a cooling-off period
ending, a payment window's 3-year tail ending, a policy changed by an import), a job that did
not run for some days, the reviews, a change of the tier rules, and a property test against
the full recompute over random books, changes and days (SQLite, or PostgreSQL with
DATABASE_URL)."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from bot.domain.importer import mark_for_recompute
from bot.domain.tier_engine import last_run, recompute, recompute_due
from bot.domain.tiers import counts_until
from models import Customer, Policy, TierRun
from tests.support.tier_engine import SINGLE, Book, history_t, notification_t, policies
from tests.support.tiers import DAY, RULES, P

customer_t, policy_t, tier_run_t = Customer.__table__, Policy.__table__, TierRun.__table__
NOW = datetime(2025, 3, 17, 2, 30, tzinfo=timezone.utc)
PEARL = Decimal("40000")  # a 明珠 contribution (≥ 30,000)


@pytest.fixture
def book(engine):
    return Book(engine)


def daily(engine, on: date, **kw):
    return recompute_due(engine, RULES, on, now=NOW, **kw)


def evaluated(book: Book, *ids: int) -> list[date | None]:
    return [book.get(c).evaluated_on for c in ids]


def change_policy(engine, cid: int, **values) -> None:
    """What an import does in its transaction: the policy rows, then the customer's flag."""
    with engine.begin() as c:
        c.execute(update(policy_t).where(policy_t.c.customer_id == cid).values(**values))
        mark_for_recompute(c, {cid})


# --- Who is evaluated --------------------------------------------------------------------------

# Counts from 2020-01-26 (the day after its cooling-off period) through 2028-01-09 (5 + 3 years).
REGULAR = P(annualized_basic_premium=PEARL)


def test_the_first_run_evaluates_everyone_then_only_customers_with_an_event(book, engine):
    quiet = book.customer(REGULAR)
    starting = book.customer(replace(REGULAR, effective_date=date(2025, 3, 10),
                                     cooling_off_end_date=date(2025, 3, 17)))
    first = daily(engine, date(2025, 3, 16))
    assert first.evaluated == 2 and first.upgrades == 1
    assert last_run(engine) == date(2025, 3, 16)
    second = daily(engine, date(2025, 3, 17))  # the last day of the cooling-off period
    assert second.evaluated == 0
    assert evaluated(book, quiet, starting) == [date(2025, 3, 16), date(2025, 3, 16)]
    assert book.get(starting).tier == "mass"
    third = daily(engine, date(2025, 3, 18))  # the first day it counts
    assert (third.evaluated, third.upgrades) == (1, 1)
    assert (book.get(starting).tier, book.get(starting).contribution) == ("pearl", PEARL)
    assert evaluated(book, quiet) == [date(2025, 3, 16)]
    assert daily(engine, date(2025, 3, 19)).evaluated == 0


@pytest.mark.parametrize("policy,last_day", [
    (REGULAR, date(2028, 1, 9)),  # effective 2020-01-10, 5 years + the 3-year tail
    (replace(SINGLE, single_premium=PEARL * 10), date(2024, 1, 9)),  # single: 1 + 3 years
], ids=["regular", "single premium"])
def test_the_tail_ending_is_an_event_on_the_day_after_the_last_counting_day(
        book, engine, policy, last_day):
    cid = book.customer(policy)
    daily(engine, last_day - 3 * DAY)
    on_last = daily(engine, last_day)
    assert on_last.evaluated == 0 and book.get(cid).contribution == PEARL
    after = daily(engine, last_day + DAY)
    assert after.evaluated == 1
    row = book.get(cid)  # no longer counts; the tier waits for the review
    assert (row.contribution, row.tier, row.evaluated_on) == (0, "pearl", last_day + DAY)


def test_a_policy_changed_by_an_import_is_evaluated_at_the_next_run(book, engine):
    cid = book.customer(REGULAR, P(policy_no="P2", annualized_basic_premium=Decimal("300000")))
    other = book.customer(REGULAR)
    daily(engine, date(2025, 3, 16))
    assert book.get(cid).tier == "platinum"
    change_policy(engine, cid, status="surrendered")  # the last in-force policies end
    report = daily(engine, date(2025, 3, 17))
    assert (report.evaluated, report.drops) == (1, 1)
    row = book.get(cid)
    assert (row.tier, row.contribution, row.needs_recompute) == ("mass", 0, False)
    assert evaluated(book, other) == [date(2025, 3, 16)]


def test_a_job_that_did_not_run_catches_up_every_event_since_its_last_run(book, engine):
    early = book.customer(replace(REGULAR, effective_date=date(2025, 3, 1),
                                  cooling_off_end_date=date(2025, 3, 17)))  # counts from 18 March
    late = book.customer(replace(REGULAR, effective_date=date(2025, 3, 1),
                                 cooling_off_end_date=date(2025, 3, 21)))  # counts from 22 March
    beyond = book.customer(replace(REGULAR, effective_date=date(2025, 3, 1),
                                   cooling_off_end_date=date(2025, 3, 22)))  # from 23 March
    daily(engine, date(2025, 3, 16))
    report = daily(engine, date(2025, 3, 22))  # nothing ran from 17 to 21 March
    assert (report.evaluated, report.upgrades) == (2, 2)
    assert [book.get(c).tier for c in (early, late, beyond)] == ["pearl", "pearl", "mass"]
    assert "since 2025-03-16" in report.render()


def test_a_review_evaluates_everyone(book, engine):
    ids = [book.customer(REGULAR), book.customer()]
    daily(engine, date(2025, 6, 29))
    report = daily(engine, date(2025, 6, 30))
    assert report.review_day and report.evaluated == 2
    assert evaluated(book, *ids) == [date(2025, 6, 30)] * 2


def test_everyone_when_asked_and_when_the_tier_rules_change(book, engine):
    ids = [book.customer(REGULAR), book.customer()]
    daily(engine, date(2025, 3, 16))
    assert daily(engine, date(2025, 3, 17)).evaluated == 0
    assert daily(engine, date(2025, 3, 18), everyone=True).evaluated == 2
    cheaper = tuple(t.model_copy(update={"threshold": PEARL}) if t.code == "gold"
                    else t for t in RULES.tiers)
    rules = RULES.model_copy(update={"tiers": cheaper})
    changed = recompute_due(engine, rules, date(2025, 3, 19), now=NOW)
    assert (changed.evaluated, changed.upgrades) == (2, 1)
    assert book.get(ids[0]).tier == "gold"
    assert recompute_due(engine, rules, date(2025, 3, 20), now=NOW).evaluated == 0


def test_a_longer_tail_in_the_rules_recomputes_the_windows(book, engine):
    cid = book.customer(REGULAR)  # counts through 2028-01-09 with a 3-year tail
    daily(engine, date(2028, 1, 1))
    longer = RULES.model_copy(update={"contribution": RULES.contribution.model_copy(
        update={"tail_years": 4})})
    recompute_due(engine, longer, date(2028, 1, 2), now=NOW)
    report = recompute_due(engine, longer, date(2028, 1, 10), now=NOW)
    assert report.evaluated == 0 and book.get(cid).contribution == PEARL
    with engine.connect() as c:
        assert c.execute(select(policy_t.c.counts_until)).scalar() == date(2029, 1, 9)


def test_cli_tiers_recompute_all_and_events_only(book, db_url):
    from typer.testing import CliRunner

    from bot.cli import app
    from tests.conftest import APP_ID, APP_SECRET, TOKEN

    ids = [book.customer(REGULAR), book.customer(REGULAR)]
    env = {"DATABASE_URL": db_url, "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": APP_SECRET,
           "WECHAT_TOKEN": TOKEN, "REDIS_URL": "", "SECRET_KEY": "cli-secret-key-0123456789"}

    def tiers(*args: str) -> str:
        result = CliRunner().invoke(app, ["tiers", "recompute", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    assert "2 customers evaluated" in tiers("--date", "2025-03-16")
    out = tiers("--date", "2025-03-17")
    assert "0 customers evaluated" in out and "event since 2025-03-16" in out
    assert "2 customers evaluated" in tiers("--date", "2025-03-18", "--all")
    assert [book.get(c).tier for c in ids] == ["pearl", "pearl"]


def test_the_daily_job_holds_a_review_it_missed(settings, engine, book):
    from scheduler import run_tiers

    cid = book.customer(P(annualized_basic_premium=Decimal("150000")), tier="platinum")
    run_tiers(settings, date(2026, 6, 29))
    assert book.get(cid).tier == "platinum"
    report = run_tiers(settings, date(2026, 7, 3))  # nothing ran from 30 June to 2 July
    assert "2026-06-30 (downgrade review)" in report
    row = book.get(cid)
    assert (row.tier, row.tier_since) == ("gold", date(2026, 7, 1))
    assert last_run(engine) == date(2026, 7, 3)
    again = run_tiers(settings, date(2026, 7, 4))
    assert "downgrade review" not in again


# --- The incremental result is the full recompute's -------------------------------------------


def changes(n_customers: int):
    """An import between two runs: one customer's policies surrendered, pledged or restored."""
    return st.tuples(st.integers(0, n_customers - 1),
                     st.sampled_from([dict(status="surrendered"), dict(status="surrendered"),
                                      dict(status="in_force"), dict(pledged=True),
                                      dict(pledged=True), dict(pledged=False),
                                      dict(policy_loan=True)]))


@st.composite
def scripts(draw):
    customers = draw(st.lists(st.tuples(st.sampled_from([t.code for t in RULES.tiers]),
                                        st.lists(policies(), min_size=1, max_size=3)),
                              min_size=1, max_size=4))
    edges = sorted({d for _, ps in customers for p in ps for d in (
        p.cooling_off_end_date, p.cooling_off_end_date + DAY, p.effective_date,
        counts_until(p, RULES), counts_until(p, RULES) + DAY)})
    # Run days: mostly the edges themselves (so both sides of an edge are often run on
    # consecutive days), some days between them and far beyond; the gaps are days the job
    # did not run.
    days = sorted(set(draw(st.lists(st.one_of(
        st.sampled_from(edges), st.sampled_from(edges), st.sampled_from(edges),
        st.builds(lambda d, k: d + timedelta(days=k), st.sampled_from(edges),
                  st.integers(-400, 400))), min_size=2, max_size=7))))
    start, steps = days[0], []
    for day in days[1:]:
        if draw(st.booleans()):
            steps.append(("import", draw(changes(len(customers)))))
        steps.append(("run", day))
    return customers, start, steps


def play(book: Book, engine, customers, start: date, steps, *, incremental: bool) -> list:
    book.clear()
    with engine.begin() as c:
        c.execute(delete(tier_run_t))
    ids = [book.customer(*ps, tier=held) for held, ps in customers]
    seen = []
    for kind, arg in [("run", start), *steps]:
        if kind == "import":
            index, values = arg
            change_policy(engine, ids[index], **values)
            continue
        if incremental:
            daily(engine, arg)
        else:
            recompute(engine, RULES, arg, now=NOW)
        seen.append(outcome(book, ids))
    return seen


def outcome(book: Book, ids: list[int]) -> list:
    """What a customer would notice, per customer in order (ids and the evaluation stamp left
    out): tier, since when, contribution, the history and the notices queued."""
    index = {cid: i for i, cid in enumerate(ids)}
    return [(row.tier, row.tier_since, row.contribution,
             [(h.from_tier, h.to_tier, h.reason, h.contribution, h.effective_date)
              for h in book.rows(history_t, cid)],
             [n.dedupe_key.replace(f"tier:{cid}:", f"tier:#{index[cid]}:")
              for n in book.rows(notification_t, cid)])
            for cid in ids for row in [book.get(cid)]]


@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(script=scripts())
def test_the_daily_job_ends_where_the_full_recompute_does(book, engine, script):
    customers, start, steps = script
    incremental = play(book, engine, customers, start, steps, incremental=True)
    full = play(book, engine, customers, start, steps, incremental=False)
    assert incremental == full
