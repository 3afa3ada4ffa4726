"""理赔住院探视: a customer in hospital asks for a visit; staff visit with a gift and help
with the claim. docs/programme.md: 明珠 and up (the entitlement check is the common one), with an
in-force policy that has hospitalisation, critical illness, mild illness or disability
liability; the claim itself is reported on the hotline 95359."""
from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta

from sqlmodel import Session, select

from bot.domain.vocab import Liability, PolicyStatus
from models import HospitalVisit, Policy

VISIT_LIABILITIES = frozenset(Liability)  # every liability the programme names qualifies
ADMISSION_LOOKBACK_DAYS = 90  # an admission longer ago than this is not a current stay

_RELATIVE = {"今天": 0, "今日": 0, "昨天": 1, "昨日": 1, "前天": 2, "大前天": 3}
_MONTH_DAY = re.compile(r"^(?:(\d{4})[-年./])?(\d{1,2})[-月./](\d{1,2})[日号]?$")


def has_visit_liability(policies) -> bool:
    """Whether any in-force policy carries a liability that qualifies for a visit."""
    return any(p.status == PolicyStatus.IN_FORCE and
               VISIT_LIABILITIES & set(filter(None, (p.liabilities or "").split(";")))
               for p in policies)


def eligible(session: Session, customer_id: int) -> bool:
    policies = session.exec(select(Policy).where(Policy.customer_id == customer_id)).all()
    return has_visit_liability(policies)


def admission_date(text: str, today: date) -> date | None:
    """The admission date a customer typed (今天, 昨天, 12月1日, 12.1, 2026-12-01): the most
    recent such day not after today, within the look-back; None when it is not one."""
    norm = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or ""))
    if norm in _RELATIVE:
        return today - timedelta(days=_RELATIVE[norm])
    m = _MONTH_DAY.match(norm)
    if not m:
        return None
    year, month, day = (int(m.group(1)) if m.group(1) else None), int(m.group(2)), int(m.group(3))
    for y in ([year] if year else [today.year, today.year - 1]):
        try:
            d = date(y, month, day)
        except ValueError:
            return None
        if d <= today:
            return d if (today - d).days <= ADMISSION_LOOKBACK_DAYS else None
    return None


def request_visit(session: Session, customer_id: int, hospital: str, ward: str,
                  admitted: date, now: datetime) -> HospitalVisit:
    visit = HospitalVisit(customer_id=customer_id, hospital=hospital[:128], ward=ward[:64],
                          admission_date=admitted, created_at=now)
    session.add(visit)
    session.flush()
    return visit
