"""Messages' building blocks: templates.toml (template ids, fields, links), the settings
the messages need (`configure`, once per process, by bot.wiring), and the facts and values
of a booking's messages."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from bot.domain.bookings import service_start
from bot.domain.rules import Booking as BookingRules
from bot.infra import outbox
from bot.infra.texts import formatted
from bot.infra.wxfields import template_data
from models import Booking, Customer, FamilyMember, Institution, WechatUser


@dataclass(frozen=True)
class Template:
    name: str
    template_id: str
    fields: dict[str, str]
    link: str = ""


@dataclass
class Config:
    rules: Any = None
    templates: dict[str, Template] = field(default_factory=dict)
    url_base: str = ""
    bind_code_ttl: int = 300
    tier_notice_days: int = 3
    reminder_time: Any = None
    tz: Any = timezone(timedelta(hours=8))
    secret_key: str = ""  # seals a binding code in the outbox (bot.infra.sealed)


_config = Config()


def load_templates(path: str | Path) -> dict[str, Template]:
    """templates.toml: `[name]` with template_id, fields (key = value name), link."""
    path = Path(path)
    if not path.is_file():
        return {}
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not spec.get("template_id"):
            raise ValueError(f"{path.name}: [{name}] needs a template_id")
        fields = spec.get("fields") or {}
        if any(k in ("first", "remark") for k in fields):
            raise ValueError(f"{path.name}: [{name}] first/remark are no longer allowed")
        out[name] = Template(name, str(spec["template_id"]), dict(fields), spec.get("link", ""))
    return out


def configure(settings, rules) -> Config:
    """Read the template configuration and the settings the messages need (at start-up)."""
    global _config
    _config = Config(rules=rules, templates=load_templates(settings.templates_file),
                     url_base=settings.template_url_base.rstrip("/"),
                     bind_code_ttl=settings.bind_code_ttl_seconds,
                     tier_notice_days=settings.tier_notice_days,
                     reminder_time=settings.reminder_time, tz=settings.tz,
                     secret_key=settings.secret_key)
    return _config


def config() -> Config:
    return _config


# The values of templates.toml that hold a person's name (the beneficiary of a booking).
NAME_VALUES = frozenset({"person"})


def name_fields() -> dict[str, frozenset[str]]:
    """By template id, the keywords of the configured templates that carry a person's name:
    what a log of the sent data masks (bot.wechat.double)."""
    return {t.template_id: frozenset(k for k, v in t.fields.items() if v in NAME_VALUES)
            for t in _config.templates.values()}


def template_body(name: str, values: dict[str, Any], **link_values: Any) -> dict | None:
    """WeChat's template message body for `name` (None when the template is not configured):
    the configured fields filled from `values`, fitted to each field's rules; a field whose
    value is None (nothing to say, e.g. no free cancellation left) is left out, as WeChat
    refuses an empty value."""
    tpl = _config.templates.get(name)
    if tpl is None:
        return None
    filled = {k: values.get(v, "") for k, v in tpl.fields.items()}
    body: dict[str, Any] = {"template_id": tpl.template_id,
                            "data": template_data({k: v for k, v in filled.items()
                                                   if v is not None})}
    if tpl.link and _config.url_base:
        body["url"] = f"{_config.url_base}/{tpl.link.format(**link_values).lstrip('/')}"
    return body


def _name(kind: str, code: str) -> str:
    """The name of a service or tier (`kind`: "service" | "tier") in the rules; the code when
    the rules do not know it (or before `configure`)."""
    rules = _config.rules
    try:
        return getattr(rules, kind)(code).name if rules is not None else code
    except KeyError:
        return code


def _service_name(code: str) -> str:
    return _name("service", code)


def _tier_name(code: str) -> str:
    return _name("tier", code)


@dataclass
class _Facts:
    booking: Booking
    customer: Customer | None
    openid: str | None  # the bound WeChat account, when it follows
    place: Institution | None
    person: str


def _facts(session: Session, booking: Booking) -> _Facts:
    customer = session.get(Customer, booking.customer_id)
    user = session.exec(select(WechatUser).where(
        WechatUser.customer_id == booking.customer_id)).first()
    user = user[0] if isinstance(user, tuple) else user
    place = session.get(Institution, booking.institution_id) if booking.institution_id else None
    person = customer.name if customer else ""
    if booking.family_member_id:
        member = session.get(FamilyMember, booking.family_member_id)
        person = member.name if member else person
    openid = user.openid if user is not None and user.following else None
    return _Facts(booking, customer, openid, place, person)


def _day(booking: Booking) -> date:
    return booking.confirmed_date or booking.preferred_date


def _when(booking: Booking) -> datetime | date:
    d = _day(booking)
    if booking.confirmed_time:
        hh, mm = booking.confirmed_time.split(":")
        return datetime(d.year, d.month, d.day, int(hh), int(mm))
    return d


def _booking_rules() -> BookingRules:
    """rules.toml's [booking] (`configure` gave the rules, at start-up)."""
    return _config.rules.booking


def _starts(booking: Booking) -> datetime:
    """Messages about a booking expire when its service starts (the one definition,
    bookings.service_start)."""
    return service_start(booking)


def _values(f: _Facts, **extra: Any) -> dict[str, Any]:
    b = f.booking
    return {"number": b.number, "service": _service_name(b.service), "person": f.person,
            "place": f.place.name if f.place else "", "address": f.place.address if f.place else "",
            "date": _day(b), "when": _when(b), **extra}


def _when_text(booking: Booking) -> str:
    d = _day(booking)
    text = formatted("cn_md", d)
    return f"{text} {booking.confirmed_time}" if booking.confirmed_time else text


def _template(session: Session, f: _Facts, name: str, now: datetime, key: str,
              values: dict[str, Any], expires_at: datetime | None) -> int | None:
    if f.openid is None:
        return None
    body = template_body(name, values, number=f.booking.number)
    if body is None:
        return None
    return outbox.enqueue(session, kind=name, channel=outbox.WECHAT, recipient=f.openid,
                          payload={"template": body}, key=key, now=now,
                          customer_id=f.booking.customer_id, booking_id=f.booking.id,
                          expires_at=expires_at, with_client_msg_id=True)
