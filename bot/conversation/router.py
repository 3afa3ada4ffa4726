"""The router and the conversation engine's building blocks.

A `Router` maps menu keys (shared by menu clicks and typed intents), events, staff
commands and declarative `Flow`s to handlers. Handlers are small functions of a `Context`
that return a `Reply` (or plain text); they never touch HTTP or XML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session

from bot.conversation.stores import Record
from bot.infra.texts import render
from menus import Key

if TYPE_CHECKING:
    from bot.infra.services import Services
    from models import Customer, Staff, WechatUser


@dataclass
class Reply:
    text: str = ""
    transfer: bool = False  # hand the conversation to WeChat's human customer service
    paged: bool = False  # already one page of an earlier reply (「更多」)

    @classmethod
    def of(cls, value: "Reply | str | None") -> "Reply":
        if isinstance(value, Reply):
            return value
        return cls(text=value or "")


class Invalid(Exception):
    """Raised by a step's parser: the input is refused; `template` explains why.
    `goto` re-asks from an earlier step instead; `end` closes the flow with the reason."""

    def __init__(self, template: str, *, goto: str | None = None, end: bool = False,
                 **ctx: Any) -> None:
        super().__init__(template)
        self.template = template
        self.goto = goto
        self.end = end
        self.ctx = ctx

    def render(self) -> str:
        return render(self.template, **self.ctx)


def _account_query():
    from models import WechatUser

    t = WechatUser.__table__
    # Built once: SQLAlchemy caches a statement's compiled form, not the building of it.
    return select(t.c.customer_id, t.c.bind_locked_until).where(t.c.openid == bindparam("openid"))


_ACCOUNT = _account_query()


@dataclass
class Context:
    """Everything a handler may use for one inbound message."""

    services: "Services"
    msg: Any  # a wechatpy message or event
    conn: Connection  # the message's connection, inside its one transaction
    record: Record
    now: datetime
    notices: list[str] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)  # outbound calls
    _user: Any = field(default=None, repr=False)
    _staff: Any = field(default=False, repr=False)
    _account: Any = field(default=False, repr=False)
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

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @cached_property
    def openid(self) -> str:
        return self.msg.source

    @property
    def text(self) -> str:
        return getattr(self.msg, "content", "") or ""

    @property
    def today(self):
        return self.now.date()

    def say(self, template: str, /, **kw: Any) -> Reply:
        return Reply(render(template, **kw))

    @property
    def user(self) -> "WechatUser | None":
        if self._user is None:
            from models import WechatUser

            self._user = self.session.get(WechatUser, self.openid)
        return self._user

    @property
    def account(self):
        """(customer_id, bind_locked_until) of this WeChat user, read cheaply, or None."""
        if self._account is False:
            self._account = self.conn.execute(_ACCOUNT, {"openid": self.openid}).first()
        return self._account

    @property
    def customer(self) -> "Customer | None":
        from models import Customer

        account = self.account
        if account is None or account.customer_id is None:
            return None
        return self.session.get(Customer, account.customer_id)

    @property
    def staff(self) -> "Staff | None":
        if self._staff is False:
            from models import Staff

            self._staff = self.session.get(Staff, self.openid)
        return self._staff

    # Flow control, for handlers -------------------------------------------------------
    def start(self, flow: "Flow") -> Reply:
        from bot.conversation.engine import start_flow

        return start_flow(self, flow)


Handler = Callable[[Context], "Reply | str | None"]


@dataclass
class Step:
    """One question of a flow. `parse(ctx, text, data)` returns the value to keep or raises
    `Invalid`; `when(ctx, data)` skips the step when false; `context(ctx, data)` feeds the
    prompt template."""

    name: str
    prompt: str
    parse: Callable[[Context, str, dict], Any]
    when: Callable[[Context, dict], bool] | None = None
    context: Callable[[Context, dict], dict] | None = None

    def applies(self, ctx: Context, data: dict) -> bool:
        return self.when is None or self.when(ctx, data)

    def ask(self, ctx: Context, data: dict) -> str:
        return render(self.prompt, **(self.context(ctx, data) if self.context else {}))


@dataclass
class Flow:
    """A declared multi-step conversation: `begin` may refuse (return a Reply) or give the
    initial data; `finish` acts on the collected data."""

    name: str
    title: str
    steps: list[Step]
    finish: Callable[[Context, dict], "Reply | str"]
    begin: Callable[[Context], "dict | Reply"] = lambda ctx: {}

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


@dataclass
class Command:
    handler: Handler
    roles: tuple[str, ...]
    usage: str


def _register(table: dict, names) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for name in names:
            table[name] = fn
        return fn
    return deco


class Router:
    def __init__(self) -> None:
        self.keys: dict[Key, Handler] = {}
        self.events: dict[str, Handler] = {}
        self.commands: dict[str, Command] = {}
        self.flows: dict[str, Flow] = {}

    def key(self, *keys: Key):
        """Handle these menu keys (clicked, or typed as one of their words)."""
        return _register(self.keys, keys)

    def event(self, *events: str):
        """Handle these WeChat events (lower-case, as wechatpy names them)."""
        return _register(self.events, events)

    def command(self, name: str, usage: str, roles: tuple[str, ...] = ("specialist", "admin")):
        def deco(fn: Handler) -> Handler:
            self.commands[name] = Command(fn, roles, usage)
            return fn
        return deco

    def flow(self, flow: Flow) -> Flow:
        self.flows[flow.name] = flow
        return flow

    def include(self, other: "Router") -> "Router":
        for mine, theirs in ((self.keys, other.keys), (self.events, other.events),
                             (self.commands, other.commands), (self.flows, other.flows)):
            clash = set(mine) & set(theirs)
            if clash:
                raise ValueError(f"registered twice: {sorted(map(str, clash))}")
            mine.update(theirs)
        return self
