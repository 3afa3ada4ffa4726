"""A message sent while the database goes away before its `sent` mark is written: the
dispatcher keeps the outcome and writes it once the database is back, instead of sending the
message again when its lease runs out. A customer-service message carries no key WeChat
de-duplicates on, so a second send would reach the customer twice (docs/reliability.md,
"PostgreSQL restarted")."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from bot.domain import notify
from models import WechatUser
from tests.support.outbox import NOW, Clock, dispatcher, rows


MARK = re.compile(r"SET .*\bsent_at\s*=", re.S)  # a mark writes sent_at (a claim only returns it)


class DatabaseAway:
    """Fails the outbox's `sent` marks (the UPDATE that writes `sent_at`) while `away`, as a
    server that stopped between a send and its mark would fail them."""

    def __init__(self, engine) -> None:
        self.engine, self.away, self.refused = engine, False, 0
        event.listen(engine, "before_cursor_execute", self._check)

    def _check(self, conn, cursor, statement, parameters, context, executemany):
        if self.away and statement.lstrip().upper().startswith("UPDATE NOTIFICATION") \
                and MARK.search(statement):
            self.refused += 1
            raise OperationalError(statement, parameters,
                                   Exception("server closed the connection unexpectedly"))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._check)


@pytest.fixture
def database_away(services):
    fault = DatabaseAway(services.engine)
    yield fault
    fault.close()


def customer_service_message(services, openid: str, text: str) -> None:
    with Session(services.engine) as s:
        s.add(WechatUser(openid=openid, following=True, last_seen_at=NOW, bind_failures=0))
        s.commit()
        notify.text_message(s, openid, text, NOW, key=f"cs:{openid}")
        s.commit()


def sent_while_away(services, database_away, openid: str, text: str):
    """A customer-service message sent while the database refuses its mark: (clock, dispatcher)."""
    customer_service_message(services, openid, text)
    clock = Clock()
    d = dispatcher(services, clock)
    database_away.away = True
    with pytest.raises(OperationalError):
        d.run_once()  # delivered, then the database went away before the mark
    return clock, d


def test_a_send_whose_mark_failed_is_marked_later_not_sent_again(services, sent, database_away):
    openid = "oUnmarked0000001"
    clock, d = sent_while_away(services, database_away, openid, "您的留言已收到")
    assert database_away.refused == 1
    [row] = rows(services, recipient=openid)
    assert row.status == "sending"  # the database still says "being sent"
    database_away.away = False
    clock.t += d.lease + 1  # its lease has run out: any dispatcher may claim it again
    d.run_once()
    [row] = rows(services, recipient=openid)
    assert row.status == "sent" and row.sent_at is not None
    custom = [m["body"]["text"]["content"] for m in sent if m["api"] == "custom"]
    assert custom == ["您的留言已收到"]  # once, not twice


def test_a_row_claimed_again_while_its_mark_was_pending_is_not_resent(services, sent,
                                                                       database_away):
    """The row's lease runs out while its mark still cannot be written, and the next run
    claims it again: it is not sent a second time; the earlier outcome is kept for the new
    try and written once the database is back."""
    openid = "oUnmarked0000002"
    clock, d = sent_while_away(services, database_away, openid, "专家门诊已为您登记")
    clock.t += d.lease + 1
    with pytest.raises(OperationalError):
        d.run_once()  # claimed again (try 2), not sent, and still not markable
    assert rows(services, recipient=openid)[0].tries == 2
    database_away.away = False
    d.run_once()
    [row] = rows(services, recipient=openid)
    assert (row.status, row.tries) == ("sent", 2)
    assert [m["api"] for m in sent].count("custom") == 1


def test_a_send_that_failed_is_tried_again_as_before(services, sent, wechat_api, database_away):
    """Only what WeChat accepted is kept: a send WeChat refused (busy) is retried after its
    backoff, as it always was."""
    openid = "oUnmarked0000003"
    customer_service_message(services, openid, "稍后再试")
    clock = Clock()
    d = dispatcher(services, clock)
    wechat_api.state.fail_next.append(-1)
    d.run_once()
    [row] = rows(services, recipient=openid)
    assert row.status == "pending" and "-1" in row.last_error
    clock.t += 600
    d.run_once()
    assert [m["api"] for m in sent].count("custom") == 1
    assert rows(services, recipient=openid)[0].status == "sent"
