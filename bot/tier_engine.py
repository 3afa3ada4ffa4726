"""The tier engine: every customer (or the given ones) evaluated as of a day in a few
set-based SQL statements and one transaction, on SQLite and PostgreSQL alike.

It applies the rules of `bot.tiers` from the same `Rules`:
- which policies count, and the contribution value, are one aggregate over the policy table.
  Money is weighed in exact integers: fen × weight × 10⁴, cut down to the fen as in
  `bot.tiers.to_fen`. The counting window is tested on integer date keys (`bot.tiers.window_key`).
- what happens to a held tier is `bot.tiers.decide` itself: it is tabulated in Python for every
  (held tier, earned tier, any policy in force) and the table is joined in SQL.

Each change updates the customer, adds a `tier_history` row and queues a `tier_changed`
notification whose dedupe key makes a re-run queue nothing twice. A second run for the same
day changes nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import islice

from sqlalchemy import (BigInteger, Column, Connection, Date, Engine, Integer, MetaData, Numeric,
                        String, Table, Text, and_, case, cast, func, literal, literal_column,
                        select, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from bot.rules import Rules
from bot.tiers import (IN_FORCE, NO_POLICY_DROP, REVIEW_DOWNGRADE, SINGLE, UPGRADE, decide,
                       effective_date, is_review_day, window_key)
from models import Customer, Notification, Policy, TierHistory

NOTIFICATION_KIND = "tier_changed"
WEIGHT_SCALE = 10_000  # weights have at most 4 decimal places (checked by bot.rules)
YEAR = 10_000  # one year in date keys (YYYYMMDD)
CHUNK = 5_000  # customer ids per statement when only some customers are evaluated

customer = Customer.__table__
policy = Policy.__table__
history = TierHistory.__table__
notification = Notification.__table__

# --- Scratch tables (temporary, dropped at the end of the run) ----------------------------

_scratch = MetaData()
decisions = Table(  # bot.tiers.decide, tabulated: only the rows that change a tier
    "tmp_tier_decision", _scratch,
    Column("held", String(16), primary_key=True),
    Column("computed", String(16), primary_key=True),
    Column("in_force", Integer, primary_key=True),
    Column("to_tier", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("payload", Text, nullable=False),
    Column("key_suffix", String(64), nullable=False),
    prefixes=["TEMPORARY"],
)
evaluations = Table(  # one row per evaluated customer
    "tmp_tier_evaluation", _scratch,
    Column("customer_id", Integer, primary_key=True),
    Column("held", String(16), nullable=False),
    Column("computed", String(16), nullable=False),
    Column("in_force", Integer, nullable=False),
    Column("fen", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
)
changes = Table(  # one row per customer whose tier changes
    "tmp_tier_change", _scratch,
    Column("customer_id", Integer, primary_key=True),
    Column("from_tier", String(16), nullable=False),
    Column("to_tier", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("fen", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("dedupe_key", String(160), nullable=False),
    prefixes=["TEMPORARY"],
)


class date_key(FunctionElement):
    """A DATE as the integer YYYYMMDD (`bot.tiers.date_key` in SQL)."""

    type = Integer()
    name = "date_key"
    inherit_cache = True


@compiles(date_key)
def _date_key(element, compiler, **kw) -> str:
    arg = compiler.process(element.clauses, **kw)
    return (f"(CAST(EXTRACT(YEAR FROM {arg}) AS INTEGER) * 10000"
            f" + CAST(EXTRACT(MONTH FROM {arg}) AS INTEGER) * 100"
            f" + CAST(EXTRACT(DAY FROM {arg}) AS INTEGER))")


@compiles(date_key, "sqlite")
def _date_key_sqlite(element, compiler, **kw) -> str:
    return f"CAST(strftime('%Y%m%d', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


# --- The report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecomputeReport:
    on: date
    review_day: bool
    evaluated: int
    upgrades: int
    downgrades: int
    drops: int

    @property
    def unchanged(self) -> int:
        return self.evaluated - self.upgrades - self.downgrades - self.drops

    def render(self) -> str:
        review = " (downgrade review)" if self.review_day else ""
        return (f"Tiers as of {self.on}{review}: {self.evaluated} customers evaluated; "
                f"{self.upgrades} upgraded, {self.downgrades} downgraded at the review, "
                f"{self.drops} dropped with no policy in force, {self.unchanged} unchanged.")


# --- The run ------------------------------------------------------------------------------


def recompute(engine: Engine, rules: Rules, on: date, customer_ids: list[int] | None = None,
              *, now: datetime | None = None) -> RecomputeReport:
    """Evaluate customers as of `on` (all, or `customer_ids`) and apply the tier changes."""
    now = now or datetime.now(timezone.utc)
    review = is_review_day(on, rules)
    with engine.begin() as conn:
        for table in (decisions, evaluations, changes):
            table.drop(conn, checkfirst=True)
            table.create(conn)
        _evaluate(conn, rules, on, customer_ids)
        _tabulate_decisions(conn, rules, on, review)
        _collect_changes(conn)
        _apply(conn, on, now)
        evaluated = conn.execute(select(func.count()).select_from(evaluations)).scalar_one()
        by_reason = dict(conn.execute(
            select(changes.c.reason, func.count()).group_by(changes.c.reason)).all())
        for table in (changes, evaluations, decisions):
            table.drop(conn)
    return RecomputeReport(on=on, review_day=review, evaluated=evaluated,
                           upgrades=by_reason.get(UPGRADE, 0),
                           downgrades=by_reason.get(REVIEW_DOWNGRADE, 0),
                           drops=by_reason.get(NO_POLICY_DROP, 0))


def _counts(rules: Rules, on: date) -> ColumnElement[bool]:
    """Whether a policy counts on `on` (`bot.tiers.line_for`, reason `counted`)."""
    years = case((policy.c.payment_mode == SINGLE, rules.contribution.single_premium_payment_years),
                 else_=policy.c.payment_years) + rules.contribution.tail_years
    return and_(
        policy.c.status == IN_FORCE,
        policy.c.effective_date <= on,
        policy.c.cooling_off_end_date < on,
        date_key(policy.c.effective_date) + years * YEAR > window_key(on),
        ~policy.c.pledged,
        ~policy.c.policy_loan,
    )


def _weighted_units(rules: Rules) -> ColumnElement[int]:
    """A policy's weighted value in fen × WEIGHT_SCALE (`bot.tiers.weighted_value`), exact."""
    terms = [cast(func.round(policy.c[field] * 100), BigInteger) * int(weight * WEIGHT_SCALE)
             for field, weight in rules.contribution.weights.items() if weight]
    return sum(terms[1:], terms[0]) if terms else literal(0, BigInteger)


def _tier_case(fen: ColumnElement[int], rules: Rules) -> ColumnElement[str]:
    """The tier a contribution in fen earns (`Rules.tier_for`)."""
    return case(*((fen >= int(t.threshold * 100), t.code) for t in rules.tiers[:-1]),
                else_=rules.lowest.code)


def _evaluate(conn: Connection, rules: Rules, on: date, customer_ids: list[int] | None) -> None:
    """Fill the evaluation table: each customer's contribution and earned tier."""
    for ids in _chunks(customer_ids):
        totals = select(
            policy.c.customer_id,
            func.sum(case((_counts(rules, on), _weighted_units(rules)), else_=0)).label("units"),
            func.max(case((policy.c.status == IN_FORCE, 1), else_=0)).label("in_force"),
        ).group_by(policy.c.customer_id)
        if ids is not None:
            totals = totals.where(policy.c.customer_id.in_(ids))
        totals = totals.subquery()
        fen = cast(func.coalesce(totals.c.units, 0), BigInteger) // WEIGHT_SCALE
        rows = select(customer.c.id, customer.c.tier, _tier_case(fen, rules),
                      func.coalesce(totals.c.in_force, 0), fen).select_from(
            customer.outerjoin(totals, totals.c.customer_id == customer.c.id))
        if ids is not None:
            rows = rows.where(customer.c.id.in_(ids))
        conn.execute(evaluations.insert().from_select(
            ["customer_id", "held", "computed", "in_force", "fen"], rows))


def _chunks(ids: list[int] | None):
    if ids is None:
        yield None
        return
    it = iter(sorted(set(ids)))
    while chunk := list(islice(it, CHUNK)):
        yield chunk


def _tabulate_decisions(conn: Connection, rules: Rules, on: date, review: bool) -> None:
    """Fill the decision table with `decide` for every combination that changes a tier."""
    held_codes = {t.code for t in rules.tiers} | set(
        conn.execute(select(evaluations.c.held).distinct()).scalars())
    rows = []
    for held in sorted(held_codes):
        for computed in (t.code for t in rules.tiers):
            for in_force in (0, 1):
                change = decide(held, computed, in_force=bool(in_force), review_day=review,
                                rules=rules)
                if change is None:
                    continue
                effective = effective_date(change.reason, on)
                rows.append(dict(
                    held=held, computed=computed, in_force=in_force, to_tier=change.tier,
                    reason=change.reason, effective_date=effective,
                    payload=json.dumps({"from": held, "to": change.tier, "reason": change.reason,
                                        "effective_date": effective.isoformat()}),
                    key_suffix=f":{effective.isoformat()}:{change.tier}"))
    if rows:
        conn.execute(decisions.insert(), rows)


def _collect_changes(conn: Connection) -> None:
    ev, d = evaluations.c, decisions.c
    rows = select(ev.customer_id, ev.held, d.to_tier, d.reason, d.effective_date, ev.fen,
                  d.payload, literal("tier:") + cast(ev.customer_id, String) + d.key_suffix,
                  ).select_from(evaluations.join(decisions, and_(
                      d.held == ev.held, d.computed == ev.computed, d.in_force == ev.in_force)))
    conn.execute(changes.insert().from_select(
        ["customer_id", "from_tier", "to_tier", "reason", "effective_date", "fen", "payload",
         "dedupe_key"], rows))


def _cny(fen: ColumnElement[int]) -> ColumnElement:
    return fen / literal_column("100.0", Numeric)


def _apply(conn: Connection, on: date, now: datetime) -> None:
    """Write the evaluation: customers, history and notifications."""
    ch, ev = changes.c, evaluations.c
    conn.execute(history.insert().from_select(
        ["customer_id", "from_tier", "to_tier", "reason", "contribution", "effective_date",
         "changed_at"],
        select(ch.customer_id, ch.from_tier, ch.to_tier, ch.reason, _cny(ch.fen),
               ch.effective_date, literal(now, history.c.changed_at.type))))
    queued = select(ch.customer_id, literal(NOTIFICATION_KIND), ch.payload, ch.dedupe_key,
                    literal("pending"), literal(now, notification.c.created_at.type)
                    ).where(ch.customer_id.is_not(None))  # SQLite's upsert needs a WHERE
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect_insert(notification).from_select(
        ["customer_id", "kind", "payload", "dedupe_key", "status", "created_at"], queued,
    ).on_conflict_do_nothing(index_elements=["dedupe_key"]))
    conn.execute(update(customer).where(customer.c.id == ev.customer_id)
                 .values(contribution=_cny(ev.fen), evaluated_on=on))
    conn.execute(update(customer).where(customer.c.id == ch.customer_id)
                 .values(tier=ch.to_tier, tier_since=ch.effective_date))
