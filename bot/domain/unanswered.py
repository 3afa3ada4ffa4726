"""Questions the FAQ could not answer (they got the fallback), kept for staff to grow the FAQ
(docs/programme.md): the text, when, and the asker's tier; never who asked. Digit
runs that could be an ID number, a phone or a policy number are starred before storing."""
from __future__ import annotations

import re
from datetime import date, datetime, time, timezone, tzinfo

from sqlmodel import Session, select

from models import UnansweredQuestion

MAX_TEXT = 500
# Six or more digits (spaces or dashes between them allowed; an ID number may end in X).
_DIGIT_RUN = re.compile(r"\d(?:[\s\-－]*\d){4,}(?:[\s\-－]*[\dXx])")


def scrub(text: str) -> str:
    """The text with every long digit run starred: "身份证110101199001011234" keeps no number."""
    return _DIGIT_RUN.sub(lambda m: "*" * len(m.group()), text)


def record(session: Session, text: str, tier: str | None, now: datetime) -> None:
    """Keep one unanswered question, in the caller's transaction (the message's)."""
    session.add(UnansweredQuestion(text=scrub(text.strip())[:MAX_TEXT], tier=tier, asked_at=now))


def since_local(day: date, tz: tzinfo) -> datetime:
    """The start of `day` in the local time zone, as the UTC instant the rows are kept in."""
    return datetime.combine(day, time(0), tz).astimezone(timezone.utc)


def list_unanswered(session: Session, *, since: datetime | None = None) -> list[UnansweredQuestion]:
    """Oldest first."""
    query = select(UnansweredQuestion).order_by(UnansweredQuestion.asked_at, UnansweredQuestion.id)
    if since is not None:
        query = query.where(UnansweredQuestion.asked_at >= since)
    return list(session.exec(query).all())
