"""The tier rules as pure functions (no I/O): which policies count on a day, a customer's
premium contribution value, and when a held tier changes (fast up, slow down).

`bot.domain.tier_engine` applies the same rules to the whole book in SQL; both read their numbers
from `bot.domain.rules.Rules`, and a property test keeps the two in step.

Dates: adding years to 29 February gives 28 February in a common year (the contract's
anniversary falls on the last day of the month), so such a policy's last counting day is
27 February. Money: each counting policy contributes the exact weighted sum of its amounts;
the customer's total is cut down to the fen (never rounded up to reach a threshold).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Protocol

from bot.domain.rules import Rules
from bot.domain.vocab import PaymentMode, PolicyStatus

IN_FORCE = PolicyStatus.IN_FORCE.value  # policy.status of a policy in force (有效)
SINGLE = PaymentMode.SINGLE.value  # policy.payment_mode of a single-premium (趸交) policy

# Why a policy counts or not (`Line.reason`), in the order they are checked.
NOT_IN_FORCE = "not_in_force"  # written as not_in_force:<status>
NOT_YET_EFFECTIVE = "not_yet_effective"
COOLING_OFF = "cooling_off"
PERIOD_ENDED = "period_ended"
PLEDGED = "pledged"
POLICY_LOAN = "policy_loan"
COUNTED = "counted"

# Why a held tier changes (`Change.reason`, tier_history.reason).
UPGRADE = "upgrade"
REVIEW_DOWNGRADE = "review_downgrade"
NO_POLICY_DROP = "no_policy_drop"

FEN = Decimal("0.01")


class PolicyLike(Protocol):
    """What the rules read of a policy (the attributes of `models.Policy`)."""

    policy_no: str
    payment_mode: str
    annualized_basic_premium: Decimal
    single_premium: Decimal
    annual_regular_topup: Decimal
    initial_lump_sum_topup: Decimal
    irregular_topup: Decimal
    effective_date: date
    payment_years: int
    status: str
    cooling_off_end_date: date
    pledged: bool
    policy_loan: bool


@dataclass(frozen=True)
class Line:
    """One policy's part in an evaluation."""

    policy_no: str
    counted: bool
    reason: str
    amount: Decimal  # what it contributes (0 when not counted), exact
    counts_until: date | None  # its last counting day, when counted


@dataclass(frozen=True)
class Evaluation:
    on: date
    total: Decimal  # the premium contribution value, CNY to the fen
    tier: str  # the tier code `total` earns
    in_force: bool  # whether any policy is in force (counting or not)
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Change:
    tier: str
    reason: str


# --- Dates ------------------------------------------------------------------------------------


def add_years(d: date, years: int) -> date:
    """`d` moved by whole years; 29 February becomes 28 February in a common year."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return d.replace(year=d.year + years, day=28)


def payment_years(policy: PolicyLike, rules: Rules) -> int:
    """The payment period in years (a single-premium policy's is set by the rules)."""
    if policy.payment_mode == SINGLE:
        return rules.contribution.single_premium_payment_years
    return policy.payment_years


def counts_until(policy: PolicyLike, rules: Rules) -> date:
    """The last day a policy can count: the day before E + (N + tail) years."""
    years = payment_years(policy, rules) + rules.contribution.tail_years
    return add_years(policy.effective_date, years) - timedelta(days=1)


def counts_from(policy: PolicyLike) -> date:
    """The first day a policy can count: its effective date, or the day after its cooling-off
    period when that ends later."""
    return max(policy.effective_date, policy.cooling_off_end_date + timedelta(days=1))


def window(policy: PolicyLike, rules: Rules) -> tuple[date, date]:
    """(first, last) day the policy can count: what `policy.counts_from` and
    `policy.counts_until` hold, so that the daily job finds the days a contribution changes."""
    return counts_from(policy), counts_until(policy, rules)


def window_of(effective: date, cooling_off_end: date, payment_mode: str, years: int,
              rules: Rules) -> tuple[date, date]:
    """`window` of a policy given as its four dates and terms (an import's row)."""
    if payment_mode == SINGLE:
        years = rules.contribution.single_premium_payment_years
    return (max(effective, cooling_off_end + timedelta(days=1)),
            add_years(effective, years + rules.contribution.tail_years) - timedelta(days=1))


def window_digest(rules: Rules) -> str:
    """What the stored windows depend on in the rules (the tail and a single premium's
    period); when it changes, every policy's window is computed again."""
    c = rules.contribution
    return f"tail={c.tail_years};single={c.single_premium_payment_years}"


def rules_digest(rules: Rules) -> str:
    """What a customer's tier depends on in the rules: the windows, the weights and the tiers.
    When it changes, the daily job evaluates everyone again."""
    import hashlib

    parts = [window_digest(rules),
             ";".join(f"{k}={w}" for k, w in rules.contribution.weights.items()),
             ";".join(f"{t.code}>={t.threshold}" for t in rules.tiers)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def date_key(d: date) -> int:
    """The date as the integer YYYYMMDD."""
    return d.year * 10000 + d.month * 100 + d.day


def window_key(on: date) -> int:
    """A key for `on` such that, for any date E and whole years K,
    ``on < add_years(E, K)``  ⇔  ``date_key(E) + K * 10000 > window_key(on)``.

    This lets SQL test the counting window with integer arithmetic alone. It is `date_key(on)`
    except on 28 February of a common year, which is keyed as 29 February: the anniversary of a
    29 February is then 28 February itself, so that day is already past the window's end.
    """
    if on.month == 2 and on.day == 28 and not _is_leap(on.year):
        return on.year * 10000 + 229
    return date_key(on)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_review_day(d: date, rules: Rules) -> bool:
    """Whether `d` is a downgrade review day (30 June and 31 December by default)."""
    return (d.month, d.day) in rules.reviews.month_days


def review_days_between(first: date, last: date, rules: Rules) -> list[date]:
    """The review days d with first <= d <= last, in order."""
    days = []
    d = first
    while d <= last:
        d = next_review_date(d, rules)
        if d <= last:
            days.append(d)
        d += timedelta(days=1)
    return days


def next_review_date(d: date, rules: Rules) -> date:
    """The first review day on or after `d`."""
    return min(date(year, month, day) for year in (d.year, d.year + 1)
               for month, day in rules.reviews.month_days if date(year, month, day) >= d)


# --- Contribution -----------------------------------------------------------------------------


def weighted_value(policy: PolicyLike, rules: Rules) -> Decimal:
    """What the policy contributes when it counts: Σ weight × amount, exact."""
    return sum((weight * getattr(policy, field)
                for field, weight in rules.contribution.weights.items()), Decimal(0))


@dataclass(frozen=True)
class Part:
    """One premium component of a policy's contribution: amount × weight."""

    field: str  # the policy column, e.g. single_premium
    amount: Decimal
    weight: Decimal
    value: Decimal


def breakdown(policy: PolicyLike, rules: Rules) -> list[Part]:
    """How `weighted_value` is made up, one part per non-zero premium component."""
    return [Part(field, getattr(policy, field), weight, weight * getattr(policy, field))
            for field, weight in rules.contribution.weights.items()
            if getattr(policy, field) and weight]


def line_for(policy: PolicyLike, on: date, rules: Rules) -> Line:
    """Whether and how much one policy counts on `on`."""
    until = counts_until(policy, rules)
    if policy.status != IN_FORCE:
        reason = f"{NOT_IN_FORCE}:{policy.status}"
    elif on < policy.effective_date:
        reason = NOT_YET_EFFECTIVE
    elif on <= policy.cooling_off_end_date:
        reason = COOLING_OFF
    elif on > until:
        reason = PERIOD_ENDED
    elif policy.pledged:
        reason = PLEDGED
    elif policy.policy_loan:
        reason = POLICY_LOAN
    else:
        return Line(policy.policy_no, True, COUNTED, weighted_value(policy, rules), until)
    return Line(policy.policy_no, False, reason, Decimal(0), None)


def to_fen(value: Decimal) -> Decimal:
    """`value` cut down (towards zero) to the fen."""
    return value.quantize(FEN, rounding=ROUND_DOWN)


def evaluate(policies: Iterable[PolicyLike], on: date, rules: Rules) -> Evaluation:
    """A customer's premium contribution value on `on`, from all of their policies."""
    policies = list(policies)
    lines = tuple(line_for(p, on, rules) for p in policies)
    total = to_fen(sum((line.amount for line in lines), Decimal(0)))
    return Evaluation(on=on, total=total, tier=rules.tier_for(total).code,
                      in_force=any(p.status == IN_FORCE for p in policies), lines=lines)


# --- Tier changes -----------------------------------------------------------------------------


def decide(held: str, computed: str, *, in_force: bool, review_day: bool,
           rules: Rules) -> Change | None:
    """The held tier's change, if any, given the tier the contribution earns today.

    Up at once; down only on a review day, or at once when no policy is in force any more.
    A held code the rules no longer know ranks below every tier (it is replaced at once).
    """
    held_rank = rules.tier_rank(held) if rules.has_tier(held) else -1
    rank = rules.tier_rank(computed)
    if rank > held_rank:
        return Change(computed, UPGRADE)
    if rank == held_rank:
        return None
    if not in_force:
        return Change(computed, NO_POLICY_DROP)
    if review_day:
        return Change(computed, REVIEW_DOWNGRADE)
    return None


def effective_date(reason: str, on: date) -> date:
    """When a change decided on `on` takes effect: review downgrades the next day."""
    return on + timedelta(days=1) if reason == REVIEW_DOWNGRADE else on


def tiers_around(rules: Rules, held) -> list:
    """The held tier with its neighbours, highest first: what the gap is measured against."""
    i = rules.tiers.index(held)
    return list(rules.tiers[max(i - 1, 0):i + 2])


def explanation(policies: list, on: date, rules: Rules, held) -> dict:
    """How a customer's tier was computed as of `on`, as 我的等级 (template tier/my_tier)
    tells it, in chat and in the console alike: each policy's line (numbers masked), the
    total, the gap to the next tier, whether the held tier is protected until the review."""
    from bot.infra.privacy import mask_policy_no

    ev = evaluate(policies, on, rules)
    computed = rules.tier(ev.tier)
    above = rules.next_tier(held.code)
    lines = [{"no": mask_policy_no(line.policy_no), "counted": line.counted,
              "reason": line.reason, "amount": line.amount, "until": line.counts_until,
              "counts_from": p.cooling_off_end_date + timedelta(days=1),
              "product": p.product_name, "parts": breakdown(p, rules) if line.counted else []}
             for line, p in zip(ev.lines, policies)]
    return dict(held=held, computed=computed, total=ev.total, lines=lines, above=above,
                gap=(above.threshold - ev.total) if above else None,
                higher=rules.tier_rank(computed.code) > rules.tier_rank(held.code),
                protected=rules.tier_rank(computed.code) < rules.tier_rank(held.code)
                and ev.in_force,
                review=next_review_date(on, rules), in_force=ev.in_force,
                around=tiers_around(rules, held), tail_years=rules.contribution.tail_years,
                review_dates=rules.reviews.month_days)
