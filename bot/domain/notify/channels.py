"""The channels a message goes by, each an outbox row: customer-service text (48-hour
window), late replies, broadcasts, SMS and binding codes (sealed)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from bot.infra import outbox
from bot.infra.sealed import seal
from bot.infra.texts import render
from models import Notification, WechatUser
from bot.domain.notify.config import config, template_body


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
    sealed = seal(config().secret_key, outbox.SEAL_PURPOSE,
                  {"params": [str(code), str(minutes)], "text": text})
    return outbox.enqueue(session, kind="sms", channel=outbox.SMS, recipient=phone,
                          payload={"template": "bind_code", "secret": True,
                                   outbox.SEALED: sealed},
                          key=key, now=now,
                          expires_at=now + timedelta(seconds=config().bind_code_ttl))
