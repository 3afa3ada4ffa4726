"""The router: menu keys (shared by menu clicks and typed intents), events, staff commands
and flows, each mapped to a handler. Handlers are small functions of a `Context` that
return a `Reply` (or plain text); they never touch HTTP or XML.

The keys are the app's: a router made with the app's `Vocabulary` (menus.VOCABULARY)
knows which need a bound customer, and serves those only to one (`unbound` answers
everyone else), as FastAPI's dependency on the current user does: a personal key's handler
always has `ctx.customer`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bot.conversation.flow import Flow
from bot.conversation.intents import Vocabulary
from bot.conversation.reply import Reply
from bot.domain.vocab import STAFF_ROLES

Handler = Callable[..., "Reply | str | None"]


class BadArgs(ValueError):
    """A staff command's arguments do not fit its spec; the message names the one at fault."""


@dataclass(frozen=True)
class Arg:
    """One argument of a staff command. `parse` turns the word into a value or raises
    ValueError; `rest` takes the rest of the line (free text such as a reason)."""

    name: str  # as the usage shows it, e.g. 预约号 or YYYY-MM-DD
    parse: Callable[[str], Any] = str
    optional: bool = False
    rest: bool = False
    key: str = ""  # the handler's keyword (defaults to the position: a0, a1 …)
    many: bool = False  # one or more words, as long as `parse` takes them (a list)
    with_ctx: bool = False  # `parse(word, ctx)`: the parser needs the data (rules) too


@dataclass
class Command:
    name: str
    handler: Handler
    roles: tuple[str, ...]
    args: tuple[Arg, ...] = ()
    summary: str = ""
    public: bool = False  # anyone may send it (#注册); other commands are staff-only

    @property
    def usage(self) -> str:
        words = [self.name] + [f"[{a.name}]" if a.optional else f"<{a.name}>" for a in self.args]
        return " ".join(words)

    def bind(self, line: str, ctx: Any = None) -> dict[str, Any]:
        """Parse the words after the command name against the spec."""
        words = line.split()
        out: dict[str, Any] = {}
        for i, arg in enumerate(self.args):
            key = arg.key or f"a{i}"

            def parse(value: str, arg: Arg = arg) -> Any:
                return arg.parse(value, ctx) if arg.with_ctx else arg.parse(value)

            if arg.many:
                taken = []
                while words:
                    try:
                        taken.append(parse(words[0]))
                    except (ValueError, TypeError):
                        break
                    words.pop(0)
                if not taken and not arg.optional:
                    raise BadArgs(arg.name)
                out[key] = taken or None
                continue
            if arg.rest:
                value = " ".join(words)
                words = []
            else:
                value = words.pop(0) if words else ""
            if not value:
                if not arg.optional:
                    raise BadArgs(arg.name)
                out[key] = None
                continue
            try:
                out[key] = parse(value)
            except (ValueError, TypeError):
                raise BadArgs(arg.name) from None
        if words:
            raise BadArgs(words[0])
        return out


def _register(table: dict, names) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for name in names:
            table[name] = fn
        return fn
    return deco


class Router:
    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary
        self.keys: dict[Any, Handler] = {}
        self.personal: set = set()  # keys served only to a bound customer
        self.unbound: Handler | None = None  # the answer to anyone else
        self.events: dict[str, Handler] = {}
        self.commands: dict[str, Command] = {}
        self.flows: dict[str, Flow] = {}
        self.modes: dict[str, Handler] = {}

    def key(self, *keys):
        """Handle these menu keys (clicked, or typed as one of their words). A key of the
        vocabulary's `personal` is served only to a bound customer."""
        personal = self.vocabulary.personal if self.vocabulary is not None else frozenset()
        for key in keys:
            (self.personal.add if key in personal else self.personal.discard)(key)
        return _register(self.keys, keys)

    def when_unbound(self, fn: Handler) -> Handler:
        """The answer to a personal key from a user with no bound customer (binding)."""
        self.unbound = fn
        return fn

    def needs_customer(self, key) -> bool:
        return key in self.personal

    def event(self, *events: str):
        """Handle these WeChat events (lower-case, as wechatpy names them)."""
        return _register(self.events, events)

    def command(self, name: str, *args: Arg, roles: tuple[str, ...] = STAFF_ROLES,
                summary: str = "", public: bool = False):
        """A staff command, e.g. `#确认`, with its argument spec. The handler is called as
        handler(ctx, **parsed) with each Arg's key. A `public` command (only #注册) is
        also heard from users who are not staff."""
        def deco(fn: Handler) -> Handler:
            self.commands[name] = Command(name, fn, roles, tuple(args), summary, public)
            return fn
        return deco

    def mode(self, name: str):
        """Handle every text message while the user is in mode `name` (a state that is not
        a form, such as a hand-over to a human agent). The handler returns None to let the
        message through to the usual dispatch. Enter with `ctx.enter(name)`."""
        return _register(self.modes, (name,))

    def flow(self, flow: Flow) -> Flow:
        self.flows[flow.name] = flow
        return flow

    def include(self, other: "Router", *, replace: bool = False) -> "Router":
        """Add `other`'s routes; a route registered in both is an error unless `replace`."""
        for mine, theirs in ((self.keys, other.keys), (self.events, other.events),
                             (self.commands, other.commands), (self.flows, other.flows),
                             (self.modes, other.modes)):
            clash = set(mine) & set(theirs)
            if clash and not replace:
                raise ValueError(f"registered twice: {sorted(map(str, clash))}")
            mine.update(theirs)
        for key in other.keys:
            (self.personal.add if key in other.personal else self.personal.discard)(key)
        self.unbound = other.unbound or self.unbound
        self.vocabulary = self.vocabulary or other.vocabulary
        return self
