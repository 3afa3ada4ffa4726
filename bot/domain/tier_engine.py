"""The tier engine: every customer (or the given ones) evaluated as of a day in a few
set-based SQL statements and one transaction, on SQLite and PostgreSQL alike.

It applies the rules of `bot.domain.tiers`, read from the same `Rules`, in scratch tables:
1. totals: one aggregate over the policy table, each customer's counting policies weighed in
   exact integers (fen × weight × 10⁴); the counting window is tested on integer date keys
   (`bot.domain.tiers.window_key`).
2. decisions: `bot.domain.tiers.decide` itself, tabulated in Python for every (held tier, earned tier,
   any policy in force) that changes a tier.
3. evaluations: customers joined with both; the total is cut down to the fen (`bot.domain.tiers.to_fen`).
Then each change adds a `tier_history` row and queues a `tier_changed` notification (its dedupe
key makes a re-run queue nothing twice), and the customers are updated. A second run for the
same day writes nothing.

The daily job (`recompute_due`) evaluates only the customers whose contribution can have
changed since its last run (`tier_run`): a policy starting or stopping to count (its window,
`policy.counts_from` / `counts_until`, indexed) on a day since then, or a customer an import
flagged (`needs_recompute`). Everyone else's tier is a fixed point of `decide` outside a review,
so a full run would leave them alone. Everyone is evaluated on a review, on the first run, after
a gap of more than a year, and when the tier rules changed (their digest is kept in `tier_run`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import islice

from sqlalchemy import (BigInteger, Column, Connection, Date, Engine, Integer, MetaData,
                        String, Table, Text, and_, bindparam, case, cast, func, literal, or_,
                        select, type_coerce, union, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from bot.domain.rules import Rules
from bot.infra import metrics
from bot.domain.tiers import (IN_FORCE, NO_POLICY_DROP, REVIEW_DOWNGRADE, SINGLE, UPGRADE, decide,
                       effective_date, is_review_day, rules_digest, window, window_digest,
                       window_key)
from models import Customer, Money, Notification, Policy, TierHistory, TierRun, WechatUser

NOTIFICATION_KIND = "tier_changed"
WEIGHT_SCALE = 10_000  # weights have at most 4 decimal places (checked by bot.domain.rules)
YEAR = 10_000  # one year in date keys (YYYYMMDD)
CHUNK = 5_000  # customer ids per statement when only some customers are evaluated

customer = Customer.__table__
policy = Policy.__table__
history = TierHistory.__table__
notification = Notification.__table__
wechat_user = WechatUser.__table__
tier_run = TierRun.__table__

# --- Scratch tables (temporary, dropped at the end of the run) ----------------------------

_scratch = MetaData()
decisions = Table(  # bot.domain.tiers.decide, tabulated: only the rows that change a tier
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
# The scratch tables have no keys: PostgreSQL fills them in hash order, and a key would cost
# as much as the work itself; the joins hash them (or SQLite indexes them on the fly).
totals = Table(  # per customer with policies: Σ weighted fen × WEIGHT_SCALE, any in force
    "tmp_tier_total", _scratch,
    Column("customer_id", Integer, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("in_force", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)
evaluations = Table(  # per evaluated customer: the contribution and the change, if any
    "tmp_tier_evaluation", _scratch,
    Column("customer_id", Integer, nullable=False),  # unique; only ever scanned or hashed
    Column("held", String(16), nullable=False),
    Column("fen", BigInteger, nullable=False),
    Column("to_tier", String(16)),
    Column("reason", String(32)),
    Column("effective_date", Date),
    Column("payload", Text),
    Column("key_suffix", String(64)),
    prefixes=["TEMPORARY"],
)
SCRATCH = (decisions, totals, evaluations)


class date_key(FunctionElement):
    """A DATE as the integer YYYYMMDD (`bot.domain.tiers.date_key` in SQL)."""

    type = Integer()
    name = "date_key"
    inherit_cache = True


@compiles(date_key)
def _date_key(element, compiler, **kw) -> str:
    arg = compiler.process(element.clauses, **kw)
    return " + ".join(f"CAST(EXTRACT({part} FROM {arg}) AS INTEGER) * {scale}"
                      for part, scale in (("YEAR", 10000), ("MONTH", 100), ("DAY", 1)))


@compiles(date_key, "postgresql")
def _date_key_postgresql(element, compiler, **kw) -> str:
    arg = compiler.process(element.clauses, **kw)  # date_part (a float) is cheaper than EXTRACT
    return " + ".join(f"CAST(date_part('{part}', {arg}) AS INTEGER) * {scale}"
                      for part, scale in (("year", 10000), ("month", 100), ("day", 1)))


@compiles(date_key, "sqlite")
def _date_key_sqlite(element, compiler, **kw) -> str:  # stored as text YYYY-MM-DD
    return f"CAST(replace({compiler.process(element.clauses, **kw)}, '-', '') AS INTEGER)"


def fen_of(column: ColumnElement) -> ColumnElement[int]:
    """A money column (`models.Money`, stored as whole fen) as the integer it holds."""
    return type_coerce(column, BigInteger)


# --- The report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecomputeReport:
    on: date
    review_day: bool
    evaluated: int
    upgrades: int
    downgrades: int
    drops: int
    scope: str = ""  # who was evaluated, when the daily job chose (empty: as asked)

    @property
    def unchanged(self) -> int:
        return self.evaluated - self.upgrades - self.downgrades - self.drops

    def render(self) -> str:
        review = " (downgrade review)" if self.review_day else ""
        return (f"Tiers as of {self.on}{review}: {self.evaluated} customers evaluated; "
                f"{self.upgrades} upgraded, {self.downgrades} downgraded at the review, "
                f"{self.drops} dropped with no policy in force, {self.unchanged} unchanged."
                + (f" ({self.scope})" if self.scope else ""))


# --- The run ------------------------------------------------------------------------------


def recompute(engine: Engine, rules: Rules, on: date, customer_ids: list[int] | None = None,
              *, now: datetime | None = None, review: bool | None = None,
              notice_days: int = 3) -> RecomputeReport:
    """Evaluate customers as of `on` (all, or `customer_ids`) and apply the tier changes.
    `review` (default: whether `on` is a review day) allows the review's downgrades."""
    with engine.begin() as conn:
        return _recompute(conn, rules, on, customer_ids, now=now, review=review,
                          notice_days=notice_days)


def _recompute(conn: Connection, rules: Rules, on: date, customer_ids: list[int] | None, *,
               now: datetime | None, review: bool | None, notice_days: int,
               scope: str = "") -> RecomputeReport:
    now = now or datetime.now(timezone.utc)
    review = is_review_day(on, rules) if review is None else review
    if conn.dialect.name == "postgresql":  # one hash table of all customers, no JIT
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL jit = off")
    _clear_marks(conn, customer_ids)
    for table in SCRATCH:
        table.drop(conn, checkfirst=True)
        table.create(conn)
    for ids in _chunks(customer_ids):
        _sum_policies(conn, rules, on, ids)
        _tabulate_decisions(conn, rules, on, review, ids)
        _evaluate(conn, rules, ids)
    _apply(conn, on, now, rules, notice_days)
    counts = dict(conn.execute(select(evaluations.c.reason, func.count())
                               .group_by(evaluations.c.reason)).all())
    for table in reversed(SCRATCH):
        table.drop(conn)
    return RecomputeReport(on=on, review_day=review, evaluated=sum(counts.values()),
                           upgrades=counts.get(UPGRADE, 0),
                           downgrades=counts.get(REVIEW_DOWNGRADE, 0),
                           drops=counts.get(NO_POLICY_DROP, 0), scope=scope)


# --- The daily job: only the customers with an event ----------------------------------------

DAILY = "daily"  # tier_run.name of the daily job's progress
FULL_AFTER_DAYS = 366  # a longer gap since the last run: everyone is evaluated
FILL_BATCH = 20_000  # policies per transaction when their windows are filled


def last_run(engine: Engine) -> date | None:
    """The day the daily job last evaluated as of (None: it never ran)."""
    with engine.connect() as conn:
        return conn.execute(select(tier_run.c.evaluated_on)
                            .where(tier_run.c.name == DAILY)).scalar()


def fill_windows(engine: Engine, rules: Rules, *, flag: bool = True) -> int:
    """Compute the counting window of every policy that has none (written before migration
    0015, or by a path that does not set it), in short transactions, flagging each one's
    customer for evaluation in the same transaction (`flag`). Returns how many policies."""
    p = policy.c
    filled = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(p.id, p.customer_id, p.payment_mode, p.payment_years, p.effective_date,
                       p.cooling_off_end_date)
                .where(or_(p.counts_from.is_(None), p.counts_until.is_(None)))
                .limit(FILL_BATCH)).all()
            if not rows:
                return filled
            conn.execute(update(policy).where(p.id == bindparam("b_id")).values(
                counts_from=bindparam("b_from"), counts_until=bindparam("b_until")),
                [dict(zip(("b_id", "b_from", "b_until"), (r.id, *window(r, rules))))
                 for r in rows])
            if flag:
                ids = sorted({r.customer_id for r in rows})
                for chunk in _chunks(ids):
                    conn.execute(update(customer).where(customer.c.id.in_(chunk),
                                                        ~customer.c.needs_recompute)
                                 .values(needs_recompute=True))
            filled += len(rows)


def due_customers(conn: Connection, since: date, on: date) -> list[int]:
    """Customers whose contribution on `on` may differ from the one on `since`: a policy that
    starts or stops counting on a day between them (the later one included), and every
    customer an import flagged (`needs_recompute`: a new or changed policy, a policy no longer
    in force). A policy counts from `counts_from` through `counts_until`, so its changes fall on
    `counts_from` and on the day after `counts_until`."""
    lo, hi = sorted((since, on))
    p = policy.c
    counting = and_(p.status == IN_FORCE, ~p.pledged, ~p.policy_loan)
    starts = select(p.customer_id).where(p.counts_from > lo, p.counts_from <= hi, counting)
    stops = select(p.customer_id).where(p.counts_until >= lo, p.counts_until < hi, counting)
    flagged = select(customer.c.id).where(customer.c.needs_recompute)
    return sorted(conn.execute(union(starts, stops, flagged)).scalars())


def recompute_due(engine: Engine, rules: Rules, on: date, *, everyone: bool = False,
                  now: datetime | None = None, review: bool | None = None,
                  notice_days: int = 3) -> RecomputeReport:
    """The daily job's evaluation as of `on`: only the customers with an event since the last
    run (`due_customers`), or everyone when asked (`everyone`), on a review (`review`, default:
    whether `on` is a review day), on the first run, after a gap of more than a year, or when
    the rules of tiers changed since the last run. Records the run in the same transaction."""
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    review = is_review_day(on, rules) if review is None else review
    digest, windows = rules_digest(rules), window_digest(rules)
    with engine.connect() as conn:
        state = conn.execute(select(tier_run).where(tier_run.c.name == DAILY)).first()
        conn.rollback()
    if state is not None and state.window_digest != windows:
        with engine.begin() as conn:  # the tail or a single premium's period changed
            conn.execute(update(policy).values(counts_from=None, counts_until=None))
        state = None  # and everyone is evaluated
    fill_windows(engine, rules, flag=state is not None)
    if everyone:
        reason = "everyone, as asked"
    elif review:
        reason = "everyone, at the review"
    elif state is None:
        reason = "everyone, as the first run"
    elif state.rules_digest != digest:
        reason = "everyone, as the rules of tiers changed"
    elif abs((on - state.evaluated_on).days) > FULL_AFTER_DAYS:
        reason = f"everyone, as the last run was as of {state.evaluated_on}"
    else:
        reason = ""
    with engine.begin() as conn:
        if reason:
            ids, scope = None, reason
        else:
            ids = due_customers(conn, state.evaluated_on, on)
            scope = f"customers with an event since {state.evaluated_on}"
        report = _recompute(conn, rules, on, ids, now=now, review=review,
                            notice_days=notice_days, scope=scope)
        values = dict(evaluated_on=on, rules_digest=digest, window_digest=windows,
                      finished_at=now)
        if conn.execute(update(tier_run).where(tier_run.c.name == DAILY)
                        .values(**values)).rowcount == 0:
            conn.execute(tier_run.insert().values(name=DAILY, **values))
    metrics.tier_run(report, time.perf_counter() - started,
                     "review" if review else "everyone" if reason else "events")
    return report


def _clear_marks(conn: Connection, ids: list[int] | None) -> None:
    """Clear the `needs_recompute` flags of the customers this run evaluates, first thing in
    its transaction: an import flagging one of them meanwhile waits for this run's commit
    (the row lock), so its flag survives for its own run."""
    flagged = customer.c.needs_recompute
    for chunk in _chunks(ids):
        where = flagged if chunk is None else and_(flagged, customer.c.id.in_(chunk))
        conn.execute(update(customer).where(where).values(needs_recompute=False))


def _chunks(ids: list[int] | None) -> Iterator[list[int] | None]:
    """None (everyone) once, or the given ids in chunks small enough for one statement."""
    if ids is None:
        yield None
        return
    it = iter(sorted(set(ids)))
    while chunk := list(islice(it, CHUNK)):
        yield chunk


def _counts(rules: Rules, on: date) -> ColumnElement[bool]:
    """Whether a policy counts on `on` (`bot.domain.tiers.line_for`, reason `counted`)."""
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
    """A policy's weighted value in fen × WEIGHT_SCALE (`bot.domain.tiers.weighted_value`), exact."""
    terms = [fen_of(policy.c[field]) * int(weight * WEIGHT_SCALE)
             for field, weight in rules.contribution.weights.items() if weight]
    return sum(terms[1:], terms[0]) if terms else literal(0, BigInteger)


def _sum_policies(conn: Connection, rules: Rules, on: date, ids: list[int] | None) -> None:
    """Fill the totals table: one aggregate over the policies."""
    owner = policy.c.customer_id
    # SQLite would walk the customer_id index and fetch rows at random; grouping by an
    # expression makes it scan the table and sort, several times faster.
    # With a few customers, the index is the way.
    group = owner + 0 if conn.dialect.name == "sqlite" and ids is None else owner
    rows = select(group, func.sum(case((_counts(rules, on), _weighted_units(rules)), else_=0)),
                  func.max(case((policy.c.status == IN_FORCE, 1), else_=0))).group_by(group)
    if ids is not None:
        rows = rows.where(owner.in_(ids))
    conn.execute(totals.insert().from_select(["customer_id", "units", "in_force"], rows))


def _tabulate_decisions(conn: Connection, rules: Rules, on: date, review: bool,
                        ids: list[int] | None) -> None:
    """Add `decide` for every (held, earned, in force) that changes a tier to the table."""
    held = select(customer.c.tier).distinct()
    if ids is not None:
        held = held.where(customer.c.id.in_(ids))
    known = set(conn.execute(select(decisions.c.held).distinct()).scalars())
    codes = {t.code for t in rules.tiers} | set(conn.execute(held).scalars())
    rows = []
    for held_code in sorted(codes - known):
        for computed in (t.code for t in rules.tiers):
            for in_force in (0, 1):
                change = decide(held_code, computed, in_force=bool(in_force), review_day=review,
                                rules=rules)
                if change is None:
                    continue
                effective = effective_date(change.reason, on)
                rows.append(dict(
                    held=held_code, computed=computed, in_force=in_force, to_tier=change.tier,
                    reason=change.reason, effective_date=effective,
                    payload=json.dumps({"from": held_code, "to": change.tier,
                                        "reason": change.reason,
                                        "effective_date": effective.isoformat()}),
                    key_suffix=f":{effective.isoformat()}:{change.tier}"))
    if rows:
        conn.execute(decisions.insert(), rows)


def _tier_case(fen: ColumnElement[int], rules: Rules) -> ColumnElement[str]:
    """The tier a contribution in fen earns (`Rules.tier_for`)."""
    return case(*((fen >= int(t.threshold * 100), t.code) for t in rules.tiers[:-1]),
                else_=rules.lowest.code)


def _evaluate(conn: Connection, rules: Rules, ids: list[int] | None) -> None:
    """Fill the evaluation table: each customer's contribution and the decided change."""
    t, d = totals.c, decisions.c
    fen = func.coalesce(t.units, 0) // WEIGHT_SCALE  # cut toward zero to the fen, as to_fen
    rows = select(customer.c.id, customer.c.tier, fen, d.to_tier, d.reason, d.effective_date,
                  d.payload, d.key_suffix).select_from(
        customer.outerjoin(totals, t.customer_id == customer.c.id).outerjoin(decisions, and_(
            d.held == customer.c.tier, d.computed == _tier_case(fen, rules),
            d.in_force == func.coalesce(t.in_force, 0))))
    if ids is not None:
        rows = rows.where(customer.c.id.in_(ids))
    # In customer order, so that the writes that follow walk the customer table in order.
    rows = rows.order_by(customer.c.id)
    conn.execute(evaluations.insert().from_select(
        ["customer_id", "held", "fen", "to_tier", "reason", "effective_date", "payload",
         "key_suffix"], rows))


def _cny(fen: ColumnElement[int]) -> ColumnElement:
    """Whole fen, as a value for a money column (stored as whole fen)."""
    return type_coerce(fen, Money)


def _apply(conn: Connection, on: date, now: datetime, rules: Rules, notice_days: int) -> None:
    """Write the evaluation: history, notices, then the customers.

    A tier-change notice goes to the outbox only for a real change (not a customer's first
    evaluation, which moves them off the default lowest tier) of a customer whose WeChat
    account is bound and following now; it expires after `notice_days` (no stale backlog)."""
    ev = evaluations.c
    changed = ev.reason.is_not(None)
    conn.execute(history.insert().from_select(
        ["customer_id", "from_tier", "to_tier", "reason", "contribution", "effective_date",
         "changed_at"],
        select(ev.customer_id, ev.held, ev.to_tier, ev.reason, _cny(ev.fen), ev.effective_date,
               literal(now, history.c.changed_at.type)).where(changed)))
    first = and_(customer.c.evaluated_on.is_(None), ev.held == rules.lowest.code)
    due = now.timestamp()
    queued = (select(ev.customer_id, literal(NOTIFICATION_KIND), ev.payload,
                     literal("tier:") + cast(ev.customer_id, String) + ev.key_suffix,
                     literal("pending"), literal(now, notification.c.created_at.type),
                     literal("wechat"), wechat_user.c.openid, literal(0), literal(due),
                     literal(due + notice_days * 86400.0))
              .select_from(evaluations.join(customer, customer.c.id == ev.customer_id)
                           .join(wechat_user, wechat_user.c.customer_id == ev.customer_id))
              .where(changed, ~first, wechat_user.c.following.is_(True)))
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(dialect_insert(notification).from_select(
        ["customer_id", "kind", "payload", "dedupe_key", "status", "created_at", "channel",
         "recipient", "tries", "next_attempt_at", "expires_at"], queued,
    ).on_conflict_do_nothing(index_elements=["dedupe_key"]))
    unchanged = and_(customer.c.evaluated_on.is_not_distinct_from(on),
                     fen_of(customer.c.contribution) == ev.fen, ev.reason.is_(None))
    conn.execute(update(customer).where(customer.c.id == ev.customer_id, ~unchanged).values(
        contribution=_cny(ev.fen), evaluated_on=on,
        tier=func.coalesce(ev.to_tier, customer.c.tier),
        tier_since=case((changed, ev.effective_date), else_=customer.c.tier_since)))
