"""`Context`: everything a handler may use for one inbound message."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session

from bot.conversation.message import Inbound
from bot.conversation.reply import Reply
from bot.conversation.stores import Record
from bot.domain import customers
from bot.infra.db import Prepared
from bot.infra.texts import render
from models import Customer, Staff, WechatUser

if TYPE_CHECKING:
    from bot.conversation.flow import Flow
    from bot.conversation.router import Router
    from bot.infra.services import Services

_USER = WechatUser.__table__
# Built and compiled once (bot.infra.db.Prepared).
_ACCOUNT = Prepared(select(_USER.c.customer_id, _USER.c.bind_locked_until).where(
    _USER.c.openid == bindparam("openid")))


@dataclass
class Context:
    services: "Services"
    router: "Router"
    msg: Any  # the wechatpy message or event, for the rare handler that needs a raw field
    inbound: Inbound
    conn: Connection  # the message's connection, inside its one transaction
    record: Record
    now: datetime
    notices: list[str] = field(default_factory=list)
    # Outbound calls, run once the message's transaction has committed. Each only hands its
    # work to a lane (`services.sms.send`, `services.send_text`) and never blocks.
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    key: Any = None  # the menu key being served (clicked or typed), set by the engine
    _user: Any = field(default=None, repr=False)
    _staff: Any = field(default=False, repr=False)
    _account: Any = field(default=False, repr=False)
    _customer: Any = field(default=False, repr=False)
    _session: Session | None = field(default=None, repr=False)

    @property
    def session(self) -> Session:
        """An ORM session on the message's connection, made on first use (many messages
        never need one). It works in a SAVEPOINT of the message's transaction: a failed
        flush undoes only its own writes, never other messages' sharing the commit. The
        pipeline commits; handlers never do."""
        if self._session is None:
            self._session = Session(bind=self.conn, expire_on_commit=False,
                                    join_transaction_mode="create_savepoint")
        return self._session

    def flush(self) -> None:
        """Write the session's changes into the message's transaction (releases the
        session's savepoint; the transaction itself is committed by the pipeline)."""
        if self._session is not None:
            self._session.commit()

    def discard(self) -> None:
        """Undo the session's writes since the last flush (its savepoint)."""
        if self._session is not None:
            self._session.rollback()
            self._user = None
            self._staff = False
            self._customer = False

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
            self._user, self._staff = None, False

    @property
    def openid(self) -> str:
        return self.inbound.openid

    @property
    def text(self) -> str:
        return self.inbound.text

    @property
    def today(self) -> date:
        return self.now.date()

    def say(self, template: str, /, **kw: Any) -> Reply:
        return Reply(render(template, **kw))

    @property
    def user(self) -> WechatUser | None:
        if self._user is None:
            self._user = self.session.get(WechatUser, self.openid)
        return self._user

    @property
    def account(self):
        """(customer_id, bind_locked_until) of this WeChat user, read cheaply, or None."""
        if self._account is False:
            self._account = _ACCOUNT.first(self.conn, {"openid": self.openid})
        return self._account

    @property
    def customer(self) -> Customer | None:
        """The bound customer, read once per message with a Core statement (no ORM session):
        a read-only row with the attributes of `models.Customer`."""
        if self._customer is False:
            account = self.account
            self._customer = (None if account is None or account.customer_id is None
                              else customers.customer(self.conn, account.customer_id))
        return self._customer

    @property
    def staff(self) -> Staff | None:
        if self._staff is False:
            self._staff = self.session.get(Staff, self.openid)
        return self._staff

    MODE = "@"  # record.state of a mode: "@name"

    @property
    def mode(self) -> str | None:
        state = self.record.state
        return state[1:] if state and state.startswith(self.MODE) else None

    def enter(self, mode: str, **data: Any) -> None:
        """Put the user in `mode` (see Router.mode), leaving any flow."""
        self.record.clear()
        self.record.state, self.record.data = self.MODE + mode, dict(data)

    def start(self, flow: "Flow", **initial: Any) -> Reply:
        """Start `flow` for this user (abandoning any other), with `initial` answers."""
        return flow.start(self, initial)
