"""A binding code waiting in the outbox is not readable at rest (issue 15, left open from the
last round): sealed under a key derived from SECRET_KEY, opened only by the dispatcher to
send, and scrubbed once sent."""
from __future__ import annotations

from sqlmodel import Session

from bot.domain import notify
from tests.support.outbox import NOW, Clock, dispatcher, rows

CODE = "482913"


def _queue(services, key="bind:sealed") -> None:
    with Session(services.engine) as s:
        notify.binding_code(s, "13912345678", CODE, 5, NOW, key=key)
        s.commit()


def test_a_binding_code_waits_sealed_and_is_sent_in_the_clear(services):
    services.sms.provider.sent.clear()
    _queue(services)
    [row] = rows(services)
    assert row.status == "pending"
    assert CODE not in row.payload  # at rest: nothing readable, in any field of the row
    assert all(CODE not in str(v) for v in row)
    dispatcher(services, Clock()).drain()
    [(phone, text)] = services.sms.provider.sent
    assert phone == "13912345678" and CODE in text  # the customer gets the code
    [row] = rows(services)
    assert row.status == "sent" and CODE not in row.payload and "sealed" not in row.payload


def test_a_code_sealed_under_another_secret_key_is_never_sent(services):
    services.sms.provider.sent.clear()
    _queue(services)
    dispatcher(services, Clock(), secret_key="another-secret-key-0123456789abcdef").drain()
    [row] = rows(services)
    assert row.status == "dead" and "cannot be opened" in row.last_error
    assert not services.sms.provider.sent
