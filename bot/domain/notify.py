"""What the bot tells customers, and when: the one API the rest of the code calls to send a
message. Each function writes outbox rows (bot.infra.outbox) in the caller's transaction,
so a message exists exactly when the change that causes it is committed; the dispatcher
sends it (at once, when the serving process kicks it after the commit; else on its next
sweep).

Every function takes the session of the caller's transaction and `now` (aware). Texts come
from Jinja templates (bot/templates/notify, bot/templates/sms); template message ids and
fields from templates.toml (TEMPLATES_FILE).

Expiry (a message that can no longer help is not sent late):
- binding code SMS: with the code (BIND_CODE_TTL_SECONDS);
- customer-service text and late replies: with WeChat's 48-hour window after the user's
  last message;
- booking messages: when the service starts; tier changes: TIER_NOTICE_DAYS.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import and_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from bot.domain.bookings import calendar, cancellation_terms, service_start
from bot.domain.rules import Booking as BookingRules
from bot.domain.vocab import BookingStatus
from bot.infra import outbox
from bot.infra.sealed import seal
from bot.infra.texts import local, render
from bot.infra.wxfields import template_data
from models import Booking, Customer, FamilyMember, Institution, Notification, WechatUser



# --- Configuration ---------------------------------------------------------------------------


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


# --- Building messages -----------------------------------------------------------------------


def template_body(name: str, values: dict[str, Any], **link_values: Any) -> dict | None:
    """WeChat's template message body for `name` (None when the template is not configured):
    the configured fields filled from `values`, fitted to each field's rules."""
    tpl = _config.templates.get(name)
    if tpl is None:
        return None
    body: dict[str, Any] = {"template_id": tpl.template_id,
                            "data": template_data({k: values.get(v, "") for k, v in tpl.fields.items()})}
    if tpl.link and _config.url_base:
        body["url"] = f"{_config.url_base}/{tpl.link.format(**link_values).lstrip('/')}"
    return body


def _service_name(code: str) -> str:
    rules = _config.rules
    try:
        return rules.service(code).name if rules is not None else code
    except KeyError:
        return code


def _tier_name(code: str) -> str:
    rules = _config.rules
    try:
        return rules.tier(code).name if rules is not None else code
    except KeyError:
        return code


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
    """rules.toml's [booking] (its defaults before `configure`: a bare script)."""
    return _config.rules.booking if _config.rules is not None else BookingRules()


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
    text = f"{d.month}月{d.day}日"
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


# --- The API ---------------------------------------------------------------------------------


def booking_received(session: Session, booking: Booking, now: datetime) -> list[int]:
    """预约已受理: a template message to the policyholder (sent at once)."""
    f = _facts(session, booking)
    row = _template(session, f, "booking_received", now, f"booking:{booking.id}:received",
                    _values(f), _starts(booking))
    return [r for r in (row,) if r]


def booking_confirmed(session: Session, booking: Booking, now: datetime) -> list[int]:
    """预约成功: template message and SMS (service, institution, address, date and time, the ID
    card; fees for 专家门诊/特种检查). A booking confirmed for tomorrow after the reminder
    hour gets its reminder at once."""
    f = _facts(session, booking)
    fees = booking.service in _booking_rules().customer_pays_fees
    key = f"booking:{booking.id}:confirmed:{_day(booking)}:{booking.confirmed_time}"
    note = render("notify/confirmed_note", fees=fees)
    rows = [_template(session, f, "booking_confirmed", now, key, _values(f, note=note),
                      _starts(booking))]
    if f.customer is not None and f.customer.phone:
        free_until = _free_until(booking, now)
        params = [_service_name(booking.service), _when_text(booking),
                  f.place.name if f.place else "", f.place.address if f.place else "",
                  booking.number]
        text = render("sms/booking_confirmed", service=params[0], when=params[1],
                      place=params[2], address=params[3], number=booking.number, fees=fees,
                      free_until=free_until)
        rows.append(sms(session, f.customer.phone, "booking_confirmed", params, now,
                        key=key + ":sms", expires_at=_starts(booking),
                        _text=text, _customer_id=booking.customer_id, _booking_id=booking.id))
    here = now.astimezone(_config.tz)
    if (booking.confirmed_date == here.date() + timedelta(days=1) and _config.reminder_time
            and here.time() >= _config.reminder_time and booking.reminded_at is None):
        rows += reminder(session, booking, now)
    return [r for r in rows if r]


def _free_until(booking: Booking, now: datetime) -> datetime | None:
    """When a late confirmation leaves free cancellation open only for a grace period."""
    try:
        rules = _config.rules
        free, deadline = cancellation_terms(booking, now, calendar(),
                                            cutoff=rules.booking.cancel_cutoff,
                                            grace_hours=rules.booking.confirm_grace_hours)
    except Exception:  # no rules configured (a bare script): say nothing rather than wrong
        return None
    if not free or deadline is None:
        return None
    return deadline


def booking_cancelled(session: Session, booking: Booking, now: datetime, *, counted: bool,
                      by_staff: bool = False, reason: str | None = None) -> list[int]:
    """预约已取消 (whether the use was counted). Queued reminders of the booking are dropped.
    A cancellation by staff goes by SMS too when the confirmation did (the customer may rely
    on the SMS alone)."""
    drop_reminders(session, booking, "booking cancelled")
    f = _facts(session, booking)
    note = render("notify/cancelled_note", counted=counted, by_staff=by_staff, reason=reason)
    key = f"booking:{booking.id}:cancelled"
    rows = [_template(session, f, "booking_cancelled", now, key, _values(f, note=note),
                      now + timedelta(days=2))]
    if by_staff and f.customer is not None and f.customer.phone and _confirmed_by_sms(session, booking):
        params = [_service_name(booking.service), _when_text(booking), booking.number,
                  reason or ""]
        text = render("sms/booking_cancelled", service=params[0], when=params[1],
                      number=booking.number, reason=reason)
        rows.append(sms(session, f.customer.phone, "booking_cancelled", params, now,
                        key=key + ":sms", expires_at=now + timedelta(days=2), _text=text,
                        _customer_id=booking.customer_id, _booking_id=booking.id))
    return [r for r in rows if r]


def _confirmed_by_sms(session: Session, booking: Booking) -> bool:
    c = Notification.__table__.c
    return session.execute(sa_select(c.id).where(
        c.booking_id == booking.id, c.channel == outbox.SMS,
        c.dedupe_key.like(f"booking:{booking.id}:confirmed:%:sms")).limit(1)).first() is not None


def drop_reminders(session: Session, booking: Booking, reason: str) -> int:
    c = Notification.__table__.c
    return outbox.drop_pending(session, and_(c.booking_id == booking.id,
                                             c.dedupe_key.like(f"reminder:{booking.id}:%")),
                               reason)


def reminder(session: Session, booking: Booking, now: datetime) -> list[int]:
    """The day-before reminder (template message and SMS), once per booking and date; sets
    `booking.reminded_at`. Nothing for a booking that is no longer confirmed."""
    if booking.status != BookingStatus.CONFIRMED or booking.confirmed_date is None:
        return []
    f = _facts(session, booking)
    key = f"reminder:{booking.id}:{booking.confirmed_date}"
    rows = [_template(session, f, "reminder", now, key,
                      _values(f, note=render("notify/reminder_note")), _starts(booking))]
    if f.customer is not None and f.customer.phone:
        params = [_when_text(booking), f.place.name if f.place else "",
                  f.place.address if f.place else "", _service_name(booking.service),
                  booking.number]
        today = now.astimezone(_config.tz).date()  # 明天 only when it is tomorrow here
        text = render("sms/reminder", day=booking.confirmed_date, today=today,
                      tomorrow=today + timedelta(days=1), when=booking.confirmed_time or "",
                      place=params[1], address=params[2], service=params[3],
                      number=booking.number)
        rows.append(sms(session, f.customer.phone, "reminder", params, now, key=key + ":sms",
                        expires_at=_starts(booking), _text=text,
                        _customer_id=booking.customer_id, _booking_id=booking.id))
    booking.reminded_at = now
    session.add(booking)
    return [r for r in rows if r]


def _last_seen(session: Session, openid: str) -> datetime | None:
    user = session.get(WechatUser, openid)
    return user.last_seen_at if user is not None else None


def text_message(session: Session, openid: str, text: str, now: datetime, *, key: str,
                 kind: str = "custom") -> int:
    """A customer-service message through the outbox. WeChat allows these only within 48
    hours of the user's last message, at most 5 of them: the dispatcher checks when it
    sends; past the window it sends the `reply_notice` template instead when one is
    configured, else dead-letters the row with the reason. The row expires with the window."""
    seen = _last_seen(session, openid)
    expires = (seen + outbox.CS_WINDOW) if seen is not None else now
    payload: dict[str, Any] = {"text": text}
    fallback = template_body("reply_notice", {"summary": render("notify/reply_summary"),
                                              "when": now})
    if fallback is not None:
        payload["fallback"] = {**fallback, "touser": openid}
        expires = max(expires, now + timedelta(days=2))
    return outbox.enqueue(session, kind=kind, channel=outbox.WECHAT, recipient=openid,
                          payload=payload, key=key, now=now, expires_at=expires,
                          with_client_msg_id=fallback is not None)


def late_reply(session: Session, openid: str, text: str, now: datetime, *, key: str) -> int:
    """A handler's reply that missed WeChat's 5-second window (see the pipeline)."""
    return text_message(session, openid, text, now, key=key, kind="late_reply")


def mass_send(session: Session, tag_id: int, content: str, now: datetime, *, key: str):
    """A broadcast to the followers with WeChat tag `tag_id` (0: everyone), as one outbox
    row; WeChat de-duplicates a retry by its `clientmsgid`."""
    row_id = outbox.enqueue(session, kind="mass_send", channel=outbox.WECHAT,
                            recipient=f"tag:{tag_id}",
                            payload={"mass": {"tag_id": tag_id, "content": content}}, key=key,
                            now=now, expires_at=now + timedelta(days=1), with_client_msg_id=True)
    return session.get(Notification, row_id)


def sms(session: Session, phone: str, template: str, params: list, now: datetime, *,
        key: str, expires_at: datetime | None = None, _text: str | None = None,
        _customer_id: int | None = None, _booking_id: int | None = None) -> int:
    """A text message through the SMS provider: `template` names the provider's template
    (TENCENT_SMS_TEMPLATES) and the Jinja template bot/templates/sms/<template>.j2 that
    gives the text for providers that take text."""
    text = _text if _text is not None else render(f"sms/{template}", params=params)
    payload = {"template": template, "params": [str(p) for p in params], "text": text}
    return outbox.enqueue(session, kind="sms", channel=outbox.SMS, recipient=phone,
                          payload=payload, key=key, now=now, expires_at=expires_at,
                          customer_id=_customer_id, booking_id=_booking_id)


def binding_code(session: Session, phone: str, code: str, minutes: int, now: datetime, *,
                 key: str) -> int:
    """A binding code: it dies with the code (BIND_CODE_TTL_SECONDS). Nothing readable at
    rest: its parameters and text are sealed under a key derived from SECRET_KEY and opened
    by the dispatcher only to send; once sent (or dead, or expired) even the sealed copy is
    scrubbed."""
    text = render("sms/bind_code", code=code, minutes=minutes)
    sealed = seal(_config.secret_key, outbox.SEAL_PURPOSE,
                  {"params": [str(code), str(minutes)], "text": text})
    return outbox.enqueue(session, kind="sms", channel=outbox.SMS, recipient=phone,
                          payload={"template": "bind_code", "secret": True,
                                   outbox.SEALED: sealed},
                          key=key, now=now,
                          expires_at=now + timedelta(seconds=_config.bind_code_ttl))


# --- Rows written by set-based SQL -----------------------------------------------------------


def prepare(row, payload: dict) -> dict | str:
    """The message of an outbox row written without one (the tier engine's `tier_changed`
    rows carry only the change): a payload to send, or a reason to drop the row."""
    if row.kind == "tier_changed":
        up = payload.get("reason") == "upgrade"
        body = template_body("tier_changed", {
            "tier": _tier_name(payload.get("to", "")), "old_tier": _tier_name(payload.get("from", "")),
            "note": render("notify/tier_note", up=up),
            "date": date.fromisoformat(payload["effective_date"]) if payload.get("effective_date") else ""})
        if body is None:
            return "no tier_changed template configured"
        return {"template": body}
    return f"no message for kind {row.kind}"


def delivery_result(session: Session, msgid: int, status: str) -> int:
    """TEMPLATESENDJOBFINISH: record WeChat's delivery result (success, failed:user block,
    failed:system failed) on the outbox row of template message `msgid`."""
    return outbox.record_delivery(session, msgid, status)


def messages_for(session: Session, openid: str, customer_id: int | None) -> list[dict]:
    """The queued and sent messages of one WeChat user (and their customer's SMS), for
    privacy export; binding codes are never shown."""
    c = Notification.__table__.c
    where = c.recipient == openid
    if customer_id is not None:
        where = where | (c.customer_id == customer_id)
    rows = session.execute(sa_select(Notification.__table__).where(where).order_by(c.id)).all()
    out = []
    for r in rows:
        payload = json.loads(r.payload or "{}")
        if payload.get("secret"):
            payload = {"template": payload.get("template"), "text": "******"}
        out.append({"id": r.id, "kind": r.kind, "channel": r.channel, "status": r.status,
                    "created_at": local(r.created_at).isoformat() if r.created_at else None,
                    "sent_at": local(r.sent_at).isoformat() if r.sent_at else None,
                    "delivery": r.delivery, "payload": payload})
    return out


# --- Due reminders ---------------------------------------------------------------------------


def due_reminders(session: Session, day: date, now: datetime, *, limit: int = 1000) -> int:
    """Queue the reminders of confirmed bookings for `day` + 1 not yet reminded; returns how
    many bookings were reminded. Idempotent: `reminded_at` and the outbox key."""
    tomorrow = day + timedelta(days=1)
    done = 0
    while True:
        batch = session.exec(select(Booking).where(
            Booking.status == BookingStatus.CONFIRMED, Booking.confirmed_date == tomorrow,
            Booking.reminded_at.is_(None)).order_by(Booking.id).limit(limit)).all()
        batch = [b[0] if isinstance(b, tuple) else b for b in batch]
        if not batch:
            return done
        for booking in batch:
            reminder(session, booking, now)
            done += 1
        session.flush()


def confirm_attendance(session: Session, booking: Booking, now: datetime) -> bool:
    """The customer's 确认 on a reminder: False when it was already confirmed."""
    if booking.attendance_confirmed_at is not None:
        return False
    session.execute(update(Booking).where(Booking.id == booking.id)
                    .values(attendance_confirmed_at=now, updated_at=now))
    booking.attendance_confirmed_at = now
    return True
