"""`Context`: everything a handler may use for one inbound message, and `Work`, the
message's unit of work.

The pipeline owns the transaction: it opens it, gives each message its `Work` (an ORM
session on the message's connection, made on first use, and the collectors of what to send
once the transaction has committed), flushes and ends it, and commits. Handlers never
commit, roll back or open savepoints; the one thing they may ask for is `ctx.attempt()`,
a block whose writes are undone when it raises (a flow's `finish` refused at commit)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, TypeVar

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session

from bot.conversation.message import Inbound
from bot.conversation.reply import Reply
from bot.conversation.stores import Record
from bot.domain import customers
from bot.infra.db import Prepared
from bot.infra.outbox.queue import collecting
from bot.infra.texts import render
from models import Customer, Staff, WechatUser

if TYPE_CHECKING:
    from bot.conversation.flow import Flow
    from bot.conversation.router import Router
    from bot.infra.services import Services

T = TypeVar("T")
_USER = WechatUser.__table__
# Built and compiled once (bot.infra.db.Prepared).
_ACCOUNT = Prepared(select(_USER.c.customer_id, _USER.c.bind_locked_until).where(
    _USER.c.openid == bindparam("openid")))


class Work:
    """One message's unit of work, made and ended by the pipeline (`flush`, `close`) inside
    the transaction it owns.

    - `session`: an ORM session on the message's connection, made on first use (many
      messages never need one). It works in a SAVEPOINT of the message's transaction, so a
      failed flush undoes only its own writes, never other messages' sharing the commit.
    - `outbox`: the outbox rows (id, channel) queued through the session, collected by
      `bot.infra.outbox.enqueue` (the session's info is this list); sent at once after the
      commit.
    - `after_commit`: outbound calls to run once the transaction has committed. Each only
      hands its work to a lane (`services.sms.send`, `services.send_text`), never blocks.
    - `attempt()`: a block whose writes (ORM or Core, on the connection) are undone when it
      raises, together with what it collected.
    - `memo(key, make)`: a value worked out once for this message (facts a flow's steps
      share), gone with the message's `Work`."""

    __slots__ = ("conn", "outbox", "after_commit", "_session", "on_reset", "_memo")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.outbox: list[tuple[int, str]] = []
        self.after_commit: list[Callable[[], None]] = []
        self._session: Session | None = None
        self.on_reset: Callable[[], None] | None = None  # forget rows read through the session
        self._memo: dict[Hashable, Any] = {}

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.conn, expire_on_commit=False,
                                    join_transaction_mode="create_savepoint",
                                    info=collecting(self.outbox))
        return self._session

    def flush(self) -> None:
        """Write the session's changes into the message's transaction (releases the
        session's savepoint; the transaction itself is the pipeline's to commit)."""
        if self._session is not None:
            self._session.commit()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
            if self.on_reset is not None:
                self.on_reset()

    def memo(self, key: Hashable, make: Callable[[], T], *, fresh: bool = False) -> T:
        """The value kept under `key` for this message, made by `make()` on first need
        (`fresh`: made again, e.g. after the facts moved)."""
        if fresh or key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Run the block in a savepoint of the message's transaction: when it raises, its
        writes and what it queued (`outbox`, `after_commit`) are undone and the exception
        goes on (and the session starts afresh)."""
        self.flush()
        self.close()
        queued, actions = len(self.outbox), len(self.after_commit)
        savepoint = self.conn.begin_nested()
        try:
            yield
            self.flush()
        except BaseException:
            self.close()
            savepoint.rollback()
            del self.outbox[queued:], self.after_commit[actions:]
            raise
        savepoint.commit()


@dataclass
class Context:
    services: "Services"
    router: "Router"
    msg: Any  # the wechatpy message or event, for the rare handler that needs a raw field
    inbound: Inbound
    conn: Connection  # the message's connection, inside its one transaction
    record: Record
    now: datetime
    work: Work = None  # type: ignore[assignment]  # the message's unit of work (the pipeline's)
    notices: list[str] = field(default_factory=list)
    key: Any = None  # the menu key being served (clicked or typed), set by the engine
    resume: str | None = None  # a nested flow finished: its parent's key, served next
    _user: Any = field(default=None, repr=False)
    _staff: Any = field(default=False, repr=False)
    _account: Any = field(default=False, repr=False)
    _customer: Any = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.work is None:
            self.work = Work(self.conn)
        self.work.on_reset = self._forget_session_rows

    def _forget_session_rows(self) -> None:
        self._user, self._staff = None, False

    @property
    def session(self) -> Session:
        """An ORM session on the message's connection (`Work.session`). The pipeline
        commits; handlers never do."""
        return self.work.session

    @property
    def outbox(self) -> list[tuple[int, str]]:
        """The outbox rows this message queued, sent right after the commit."""
        return self.work.outbox

    @property
    def after_commit(self) -> list[Callable[[], None]]:
        """Outbound calls run once this message's transaction has committed."""
        return self.work.after_commit

    def memo(self, key: Hashable, make: Callable[[], T], *, fresh: bool = False) -> T:
        """A value made once for this message and shared by the steps that need it
        (`Work.memo`): it lives exactly as long as the message."""
        return self.work.memo(key, make, fresh=fresh)

    def attempt(self):
        """`with ctx.attempt():` a block whose writes are undone when it raises
        (`Work.attempt`)."""
        return self.work.attempt()

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

    def start(self, flow: "Flow", parent: Any = None, **initial: Any) -> Reply:
        """Start `flow` for this user (abandoning any other), with `initial` answers. With
        `parent` (a menu key) the flow is nested: once it finishes, that key is served."""
        return flow.start(self, initial, parent)

    def forget_reads(self) -> None:
        """Forget what was read about this user (after a write changed it: a binding)."""
        self._user, self._staff, self._account, self._customer = None, False, False, False
