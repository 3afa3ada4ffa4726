"""The dashboard's figures and the year-end nudge, as set-based SQL (one statement per
figure, grouped in the database; nothing is counted row by row in Python).

Definitions (README, "The dashboard"):
- a booking's month is the month of its service date (the confirmed date, else the
  preferred one), in the year shown;
- no-show rate = 爽约 / (已完成 + 爽约); late-cancellation rate = 逾期取消 / every booking of
  the year that was not cancelled free of charge;
- a benefit is used when a counted booking (submitted, confirmed, completed, missed or
  cancelled late: bookings.counted) falls in the year; a yearly benefit is unused while its
  counted bookings are fewer than its quota (family members' bookings count for the
  policyholder);
- the nudge's audience: customers with an unused yearly benefit whose WeChat account is
  bound and follows, who have not been nudged for that service and year.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import and_, case, func, literal, select
from sqlmodel import Session

from bot.domain.rules import Rules
from bot.infra import outbox
from bot.infra.db import upsert
from bot.infra.texts import render
from models import (Booking, Customer, Institution, Notification, UnansweredQuestion,
                    WechatUser, YearEndNudge)

B = Booking.__table__
C = Customer.__table__
W = WechatUser.__table__
N = Notification.__table__
Q = UnansweredQuestion.__table__
NUDGED = YearEndNudge.__table__
INST = Institution.__table__

NUDGE_TEMPLATE = "benefit_reminder"


def yearly_services(rules: Rules):
    """The services with a yearly quota (洁牙, 体检, 专家门诊, 特种检查)."""
    return [s for s in rules.services if s.per_year]


def _service_day():
    return func.coalesce(B.c.confirmed_date, B.c.preferred_date)


def bookings_by_month(session: Session, year: int) -> dict[str, list[tuple[int, str, int]]]:
    """(month, group, bookings) by service, by tier and by city, months of `year`: one
    statement grouped by month, service, tier and city (at most 12 x services x tiers x
    cities rows), rolled up per view."""
    day = _service_day()
    month = func.extract("month", day)
    city = func.coalesce(INST.c.city, literal(""))  # "": no institution chosen yet
    stmt = (select(month, B.c.service, B.c.tier, city, func.count())
            .select_from(B.outerjoin(INST, INST.c.id == B.c.institution_id))
            .where(B.c.quota_year == year, day >= date(year, 1, 1), day <= date(year, 12, 31))
            .group_by(month, B.c.service, B.c.tier, city))
    views: dict[str, dict[tuple[int, str], int]] = {"service": {}, "tier": {}, "city": {}}
    for m, service, tier, place, n in session.execute(stmt):
        for by, group in (("service", service), ("tier", tier), ("city", place)):
            key = (int(m), str(group))
            views[by][key] = views[by].get(key, 0) + int(n)
    return {by: [(m, g, n) for (m, g), n in sorted(rows.items())] for by, rows in views.items()}


@dataclass(frozen=True)
class Rates:
    completed: int
    no_show: int
    cancelled_late: int
    counted_total: int  # every booking of the year not cancelled free of charge

    @property
    def no_show_rate(self) -> float | None:
        seen = self.completed + self.no_show
        return self.no_show / seen if seen else None

    @property
    def late_cancel_rate(self) -> float | None:
        return self.cancelled_late / self.counted_total if self.counted_total else None


def rates(session: Session, year: int) -> Rates:
    def n(status: str):
        return func.coalesce(func.sum(case((B.c.status == status, 1), else_=0)), 0)

    row = session.execute(select(n("completed"), n("no_show"), n("cancelled_late"),
                                 func.coalesce(func.sum(case((B.c.status != "cancelled", 1),
                                                             else_=0)), 0))
                          .where(B.c.quota_year == year)).one()
    return Rates(*(int(v) for v in row))


def tier_counts(session: Session, *, reachable: bool = False) -> dict[str, int]:
    """Customers per tier (`reachable`: whose WeChat account is bound and follows)."""
    source = C.join(W, and_(W.c.customer_id == C.c.id, W.c.following.is_(True))) \
        if reachable else C
    rows = session.execute(select(C.c.tier, func.count()).select_from(source)
                           .group_by(C.c.tier)).all()
    return {str(t): int(n) for t, n in rows}


def _spent(session: Session, rules: Rules, year: int, *, reachable: bool
           ) -> dict[tuple[str, str], int]:
    """Customers per (service, tier) with the yearly benefit used up in `year` (counted
    bookings at its quota); `reachable`: bound, following, and counting those already
    reminded of it this year too."""
    yearly = yearly_services(rules)
    if not yearly:
        return {}
    quota = case({s.code: s.per_year for s in yearly}, value=B.c.service)
    gone = (select(B.c.customer_id, B.c.service)
            .where(B.c.quota_year == year, B.c.counted.is_(True),
                   B.c.service.in_([s.code for s in yearly]))
            .group_by(B.c.customer_id, B.c.service).having(func.count() >= quota))
    if reachable:
        gone = gone.union(select(NUDGED.c.customer_id, NUDGED.c.service)
                          .where(NUDGED.c.year == year))
    gone = gone.subquery()
    source = C.join(gone, gone.c.customer_id == C.c.id)
    if reachable:
        source = source.join(W, and_(W.c.customer_id == C.c.id, W.c.following.is_(True)))
    rows = session.execute(select(gone.c.service, C.c.tier, func.count()).select_from(source)
                           .group_by(gone.c.service, C.c.tier)).all()
    return {(str(sv), str(t)): int(n) for sv, t, n in rows}


def quota_use(session: Session, rules: Rules, year: int,
              tiers: dict[str, int] | None = None) -> list[dict]:
    """Per yearly service: customers entitled (their tier offers it), uses this year, and
    the customers who have used it at least once. `tiers`: customers per tier, when the
    caller has counted them already (tier_counts)."""
    tiers = tier_counts(session) if tiers is None else tiers
    rows = session.execute(select(B.c.service, func.count(), func.count(B.c.customer_id.distinct()))
                           .where(B.c.quota_year == year, B.c.counted.is_(True))
                           .group_by(B.c.service)).all()
    used = {str(sv): (int(n), int(u)) for sv, n, u in rows}
    return [{"service": s.code, "name": s.name, "quota": s.per_year,
             "entitled": sum(tiers.get(t, 0) for t in s.tiers),
             "uses": used.get(s.code, (0, 0))[0], "users": used.get(s.code, (0, 0))[1]}
            for s in yearly_services(rules)]


def unused_benefits(session: Session, rules: Rules, year: int, *, reachable: bool = False,
                    tiers: dict[str, int] | None = None) -> list[dict]:
    """Per yearly service and tier: how many customers have not used it (up) this year
    (`reachable`: the nudge's audience, bound, following and not yet reminded)."""
    if tiers is None:
        tiers = tier_counts(session, reachable=reachable)
    spent = _spent(session, rules, year, reachable=reachable)
    return [{"service": s.code, "service_name": s.name, "tier": t.code, "tier_name": t.name,
             "customers": tiers.get(t.code, 0) - spent.get((s.code, t.code), 0)}
            for s in yearly_services(rules) for t in rules.tiers if t.code in s.tiers]


def _audience(service, year: int):
    """The nudge's audience for `service` (FROM and WHERE): bound, following customers of a
    tier offering it, fewer counted uses than its quota, not reminded of it this year."""
    used = (select(B.c.customer_id, func.count().label("used"))
            .where(B.c.service == service.code, B.c.quota_year == year, B.c.counted.is_(True))
            .group_by(B.c.customer_id).subquery())
    source = (C.outerjoin(used, used.c.customer_id == C.c.id)
              .join(W, and_(W.c.customer_id == C.c.id, W.c.following.is_(True))))
    nudged = (select(NUDGED.c.customer_id).where(
        NUDGED.c.customer_id == C.c.id, NUDGED.c.service == service.code,
        NUDGED.c.year == year).exists())
    return source, [C.c.tier.in_(service.tiers),
                    func.coalesce(used.c.used, 0) < service.per_year, ~nudged]


def unanswered_this_month(session: Session, today: date, tz, limit: int = 20) -> list[tuple[str, int]]:
    """The questions the FAQ could not answer since the 1st of this month (local time),
    most frequent first."""
    start = datetime(today.year, today.month, 1, tzinfo=tz).astimezone(timezone.utc)
    rows = session.execute(select(Q.c.text, func.count().label("n")).where(Q.c.asked_at >= start)
                           .group_by(Q.c.text).order_by(func.count().desc(), Q.c.text)
                           .limit(limit)).all()
    return [(str(t), int(n)) for t, n in rows]


def outbox_health(session: Session, today: date, tz, days: int = 14) -> list[dict]:
    """Per local day of the last `days`: messages queued, sent, retried (more than one try)
    and dead."""
    start = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), tz)
    offset = int(start.utcoffset().total_seconds())  # TIMEZONE's offset (Shanghai: fixed)
    if session.get_bind().dialect.name == "sqlite":
        day = func.date(N.c.created_at, f"{offset:+d} seconds")
    else:
        day = func.date(N.c.created_at + timedelta(seconds=offset))
    stmt = (select(day.label("d"), func.count(),
                   func.sum(case((N.c.status == "sent", 1), else_=0)),
                   func.sum(case((N.c.tries > 1, 1), else_=0)),
                   func.sum(case((N.c.status == "dead", 1), else_=0)))
            .where(N.c.created_at >= start.astimezone(timezone.utc))
            .group_by(day).order_by(day))
    found = {str(d)[:10]: (int(q), int(s or 0), int(r or 0), int(x or 0))
             for d, q, s, r, x in session.execute(stmt)}
    out = []
    for i in range(days):
        d = (today - timedelta(days=days - 1 - i)).isoformat()
        q, s, r, x = found.get(d, (0, 0, 0, 0))
        out.append({"day": d, "queued": q, "sent": s, "retried": r, "dead": x})
    return out


# --- The year-end nudge ----------------------------------------------------------------------


def nudge_preview(session: Session, rules: Rules, year: int) -> list[dict]:
    """Who the nudge would reach now, per service and tier (bound, following, unused,
    not yet nudged)."""
    return unused_benefits(session, rules, year, reachable=True)


def send_nudge(session: Session, rules: Rules, who: str, year: int, services: list[str],
               now: datetime, words: Mapping[str, str]) -> dict[str, int]:
    """Queue the year-end reminder for each service: one template message per customer in
    the audience, through the outbox, and the (customer, service, year) row that keeps it
    once; `words` is what the customer replies to book each service (预约洁牙). Returns the
    number queued per service. The caller commits."""
    from bot.domain import notify

    sent: dict[str, int] = {}
    by_code = {s.code: s for s in yearly_services(rules)}
    for code in services:
        service = by_code.get(code)
        if service is None:
            raise ValueError(f"not a yearly benefit: {code}")
        source, where = _audience(service, year)
        rows = session.execute(select(C.c.id, W.c.openid).select_from(source).where(*where)
                               .order_by(C.c.id)).all()
        note = render("notify/year_end_note", words=words[code])
        values = {"benefit": f"{year}年{service.name}服务", "deadline": date(year, 12, 31),
                  "note": note, "service": service.name, "year": year}
        body = notify.template_body(NUDGE_TEMPLATE, values)
        if body is None:
            raise ValueError(f"templates.toml has no [{NUDGE_TEMPLATE}]")
        count = 0
        for customer_id, openid in rows:
            inserted = session.execute(upsert(session, NUDGED).values(
                customer_id=customer_id, service=code, year=year, staff_openid=who,
                created_at=now).on_conflict_do_nothing()).rowcount
            if not inserted:  # a colleague's nudge a moment earlier
                continue
            outbox.enqueue(session, kind=NUDGE_TEMPLATE, channel=outbox.WECHAT,
                           recipient=openid, payload={"template": body},
                           key=f"nudge:{year}:{code}:{customer_id}", now=now,
                           customer_id=customer_id, with_client_msg_id=True,
                           expires_at=datetime(year, 12, 31, 23, 59, tzinfo=now.tzinfo))
            count += 1
        sent[code] = count
        if count:
            from bot.domain.staff_desk import audit

            audit(session, who, "year_end_nudge", f"{year}:{code}", now,
                  after={"service": code, "year": year, "queued": count})
    return sent
