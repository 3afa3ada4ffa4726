"""Declarative multi-step conversations (flows) and the engine that walks them.

A `Flow` is a list of `Step`s. Each step stores its answer in the flow's data model (one
pydantic model per flow, so a `date` comes back as a `date`) under the step's name. The
next step asked is always the first one, in declared order, that applies (`when`) and
has no answer yet: an entry that already knows some answers skips their steps, and a
`when` that depends on earlier answers needs no index arithmetic. 返回 walks back the
stack of steps actually visited.

`finish` runs as an attempt (`ctx.attempt()`, the one savepoint API of the message's unit
of work) with the state still in place: when it raises `Invalid(goto=step)` (a re-check at
commit failed) its writes are undone and the customer is put back at that step.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from bot.conversation.intents import Universal, normalize, yes_no
from bot.conversation.reply import Invalid, Reply
from bot.domain.dates import cn_number
from bot.infra.texts import render

if TYPE_CHECKING:
    from bot.conversation.context import Context

SEP = ":"
OPTIONS = "offered_"  # the data key holding the options a choice step last offered
PARENT = "parent_"  # the data key holding the menu key a nested flow resumes when it finishes


class FlowData(BaseModel):
    """Base of every flow's data model. Unknown keys are kept (extra="allow") so that a
    flow's model can grow without breaking conversations in progress."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)


@dataclass
class Step:
    """One question. `parse(ctx, text, data)` returns the answer or raises `Invalid`;
    `when(ctx, data)` skips the step when false; `context(ctx, data)` feeds the prompt.

    `accepts(ctx, text, data)` says whether a text is the step's answer without writing
    anything (the engine asks it before it reads a menu word or a question as something
    else): by default, whether `parse` takes it, so a parser must only read; a step whose
    parser writes (counts a failure, sends a code) declares `takes(text)`, the shape of
    its answer, instead."""

    name: str
    prompt: str
    parse: Callable[["Context", str, Any], Any]
    when: Callable[["Context", Any], bool] | None = None
    context: Callable[["Context", Any], dict] | None = None
    free_text: bool = False  # takes any text (a name, a hospital): commands are asked about
    digits: bool = False  # expects an ID number, phone or code: digits are never an emergency
    symptoms: bool = False  # takes symptoms: emergency advice is shown and the flow goes on
    reask: str = ""  # a short template to ask again with (after a question was answered)
    takes: Callable[[str], bool] | None = None  # the answer's shape, for a parser that writes
    # The template of the step's refusal that only says "not an answer" (refusals with any
    # other template give a reason worth more than a question's answer); "": every refusal
    # of this step is "not an answer".
    unread: str = ""

    def applies(self, ctx: "Context", data: Any) -> bool:
        return self.when is None or self.when(ctx, data)

    def ask(self, ctx: "Context", data: Any) -> str:
        return render(self.prompt, **(self.context(ctx, data) if self.context else {}))

    def answer(self, ctx: "Context", data: Any) -> Any:
        return self.parse(ctx, ctx.text.strip(), data)

    def accepts(self, ctx: "Context", text: str, data: Any) -> bool:
        """Whether `text` is this step's answer (it would be taken, not refused); writes
        nothing. `data` is a copy the reading may change."""
        if self.takes is not None:
            return self.takes(text.strip())
        try:
            self.parse(ctx, text.strip(), data)
        except Invalid:  # refused, or not of the step's kind
            return False
        return True

    def hears(self, ctx: "Context", text: str, data: Any) -> str:
        """How the step reads a text, writing nothing (`data`: a copy): ANSWER (taken), REASON
        (its own refusal, with a reason worth saying: a date in the past), NEAR (a near match
        it would ask back about) or UNREAD (not of its kind). A step without `unread` has no
        reason worth more than a question's answer: a refusal is UNREAD."""
        if self.takes is not None or not self.unread:
            return ANSWER if self.accepts(ctx, text, data) else UNREAD
        try:
            self.parse(ctx, text.strip(), data)
        except Invalid as exc:
            return UNREAD if exc.template == self.unread else REASON
        return ANSWER


@dataclass(frozen=True)
class Option:
    code: str
    label: str
    note: str = ""  # shown after the label, e.g. the year's remaining quota
    words: tuple[str, ...] = ()  # other words a customer may type for it (exact, whole message)


ANSWER, REASON, NEAR, UNREAD = "answer", "reason", "near", "unread"  # `Step.hears`
GUESS = "guess_"  # the data key holding the option a near match proposed, awaiting 是/否
# Polite padding around an answer (要咖啡, 我选北京吧): dropped before an exact comparison.
_LEAD, _TAIL = "我想要|我想做个|我想做|我要做个|我要做|想做个|想做|做个|做一个|做|我想|我要|想要|我选|选择|要|选|就", "吧|啊|呀|就行|就好|即可"
_PADDING = re.compile(rf"^(?:{_LEAD})|(?:{_TAIL})$")
# Around a short name (要女性的套餐, 给他选华山医院那家): more words, in more than one layer.
_NAME_PADDING = re.compile(rf"^(?:{_LEAD}|给他|给她|给)|(?:{_TAIL}|套餐|的|那个|那家|这个|这家)+$")


@dataclass
class Choice(Step):
    """A step answered from a list, shown as numbered tappable lines (WeChat renders
    `weixin://bizmsgmenu` links). The list is built once by `options(ctx, data)` and kept
    with the flow's data, so the answer is read against exactly what was shown; the
    option's code is stored, never its index. An answer is read in this order (docs/programme.md,
    "A typed answer is never silently swapped"):

    1. a tap on a line the bot offered this user in its last reply (its `bizmsgmenuid`; a
       tap on anything else is read as typed text), or the option's number;
    2. the option's exact label, or a keyword (`Option.words`) that only one option has;
    3. the step's own parser `parse(ctx, text, data)`, when it has one (a typed date is a
       date): it returns an option code, possibly one not offered, which `check` then
       judges; None when the text is not of its kind; or raises `Invalid` with the reason;
    4. a near match, never taken silently: the bot asks 「您是指『…』吗？」 and keeps the
       guess with the data; 是 takes it, 否 shows the options again.

    Anything else gets `unread` (what could not be read) and the options again.
    `check(ctx, code, data)` may refuse the code with a reason."""

    parse: Callable | None = None  # type: ignore[assignment]  # the step's own parser, tier 3
    options: Callable[["Context", Any], list[Option]] = None  # type: ignore[assignment]
    check: Callable[["Context", str, Any], Any] | None = None
    unread: str = "flow/pick_one"
    unread_context: Callable[["Context", Any], dict] | None = None  # more for `unread`

    def ask(self, ctx: "Context", data: Any) -> str:
        offered = self.options(ctx, data)
        setattr(data, OPTIONS, [[o.code, o.label, *o.words] for o in offered])
        setattr(data, GUESS, None)
        lines = render("flow/options", options=[
            {"n": i, "label": o.label, "note": o.note,
             "href": f"weixin://bizmsgmenu?msgmenucontent={quote(o.label)}&msgmenuid={quote(o.code)}"}
            for i, o in enumerate(offered, 1)])
        return f"{super().ask(ctx, data)}\n{lines}".strip()

    def answer(self, ctx: "Context", data: Any) -> Any:
        text = ctx.text
        code = self.read(ctx, text, data)
        if code is not None:
            return self.take(ctx, code, data)
        offered = offered_of(data)
        near = near_match(offered, text)
        if near is not None:
            setattr(data, GUESS, near)
            label = next(lab for code, lab, *_ in offered if code == near)
            raise Invalid("flow/did_you_mean", again=False, label=label)
        more = self.unread_context(ctx, data) if self.unread_context else {}
        raise Invalid(self.unread, count=len(offered), said=_shown(text), **more)

    def read(self, ctx: "Context", text: str, data: Any) -> str | None:
        """The option code the text names for certain: 是 to the guess proposed, a tap, a
        number, a label or keyword (tiers 1 and 2), then the step's own parser (tier 3);
        None when none of them reads it. Raises `Invalid` for 否 to the guess or the
        parser's reason. Reads only (the parser must not write)."""
        offered = offered_of(data)
        guess = getattr(data, GUESS, None)
        if guess is not None:
            setattr(data, GUESS, None)
            said = yes_no(text)
            if said is True and guess in {code for code, *_ in offered}:
                return guess
            if said is False:
                raise Invalid("flow/guess_declined")
            # anything else is read afresh
        code = pick(offered, text, ctx.inbound.menu_id)
        if code is None and self.parse is not None:
            code = self.parse(ctx, text.strip(), data)
        return code

    def accepts(self, ctx: "Context", text: str, data: Any) -> bool:
        """Whether `text` is read for certain as an option (`read`, never a near match)
        that `check` takes. Writes nothing: `check`, like the parser, only reads."""
        try:
            code = self.read(ctx, text, data)
            if code is None:
                return False
            self.take(ctx, code, data)
        except Invalid:  # refused by the parser or the check
            return False
        return True

    def take(self, ctx: "Context", code: str, data: Any) -> Any:
        return self.check(ctx, code, data) if self.check else code

    def hears(self, ctx: "Context", text: str, data: Any) -> str:
        try:
            code = self.read(ctx, text, data)
            if code is not None:
                self.take(ctx, code, data)
                return ANSWER
        except Invalid as exc:
            return UNREAD if exc.template == self.unread else REASON
        return NEAR if near_match(offered_of(data), text) is not None else UNREAD


def offered_of(data: Any) -> list[tuple[str, ...]]:
    """The options (code, label, *words) the step last offered, as kept with the data."""
    return [tuple(o) for o in (getattr(data, OPTIONS, None) or [])]


def offered_tap(ctx: "Context") -> bool:
    """Whether the message is a tap on a line the bot offered this user in its last reply."""
    menu_id = ctx.inbound.menu_id
    offered = (ctx.record.data or {}).get(OPTIONS) or []
    return bool(menu_id) and any(o and o[0] == menu_id for o in offered)


def _shown(text: str, limit: int = 20) -> str:
    """What the customer typed, short enough to quote back."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _plain(text: str) -> str:
    return _PADDING.sub("", normalize(text)) or normalize(text)


def name_core(text: str) -> str:
    """The short name a customer typed with the words around it dropped (女性 of 要女性的套餐)."""
    said = normalize(text)
    for _ in range(3):  # both ends, more than one layer
        said = _NAME_PADDING.sub("", said)
    return said


_ORDINAL = re.compile(r"(?:选|要|我选|就)?第(\d{1,2}|[一二两三四五六七八九十]{1,3})(?:个|项|条|家|天|种|位)?(?:吧)?")


def pick(offered: list[tuple[str, ...]], text: str, menu_id: str = "") -> str | None:
    """The option chosen for certain (tiers 1 and 2 of `Choice`): a tap on an offered line,
    the option's number, its exact label or a keyword only it has; else None."""
    codes = [o[0] for o in offered]
    if menu_id and menu_id in codes:
        return menu_id
    norm = normalize(text)
    ordinal = _ORDINAL.fullmatch(norm)  # 第2个, 第二项: the option's number said as an ordinal
    if ordinal:
        norm = ordinal[1] if ordinal[1].isdigit() else cn_number(ordinal[1])
    if norm.isdigit():
        return offered[int(norm) - 1][0] if 1 <= int(norm) <= len(offered) else None
    for said in dict.fromkeys((norm, _plain(text))):
        labels = [o[0] for o in offered if normalize(o[1]) == said]
        if len(labels) == 1:
            return labels[0]
        keyed = {o[0] for o in offered if said in {normalize(w) for w in o[2:]}}
        if len(keyed) == 1:
            return keyed.pop()
    return None


def near_match(offered: list[tuple[str, ...]], text: str) -> str | None:
    """The one option the text is close to (a label it is part of, or nearly the same), or
    None when none or several are: only ever proposed, never taken silently."""
    said = _plain(text)
    if not said or said.isdigit():
        return None
    names: dict[str, set[str]] = {}
    for code, label, *words in offered:
        for name in (label, *words):
            names.setdefault(normalize(name), set()).add(code)
    hits = {c for name, cs in names.items() if len(said) >= 2 and (said in name or name in said)
            and len(name) >= 2 for c in cs}
    if not hits:
        for name in difflib.get_close_matches(said, list(names), n=3, cutoff=0.6):
            hits |= names[name]
    return hits.pop() if len(hits) == 1 else None


Fallback = Callable[["Context", "Flow"], Reply]


@dataclass
class Flow:
    """A declared conversation: `begin(ctx)` may refuse (return a Reply) or give initial
    answers; `finish(ctx, data)` acts on the collected data.

    As python-telegram-bot's ConversationHandler declares them:
    - `fallbacks`: what a universal command (退出/取消, 返回) does at any step of this flow,
      `fallback(ctx, flow) -> Reply`; the defaults are `Flow.exit` and `Flow.back`, and a
      flow declares only the ones it does differently;
    - `conversation_timeout`: how long the flow waits for an answer before it ends (the
      next message is told and read afresh); None: the deployment's `flow_timeout_minutes`,
      which it may not exceed (the state stores keep a state no longer);
    - a nested flow returns to its parent (`map_to_parent`): started with `parent=key`
      (`ctx.start(flow, parent=key)`), it keeps the menu key in its data and, when it
      finishes, the engine serves that key (binding asked for by 预约洁牙 goes on to the
      booking); 退出 inside it says that the key was not served either."""

    name: str
    title: str
    steps: list[Step]
    finish: Callable[["Context", Any], "Reply | str"]
    begin: Callable[["Context"], "dict | Reply"] = lambda ctx: {}
    model: type[FlowData] = FlowData
    intro: bool = True  # greet with the flow's title when it starts
    sticky: bool = True  # False: an answer that does not fit leaves the flow, unanswered
    fallbacks: Mapping[Universal, Fallback] = field(default_factory=dict)
    conversation_timeout: timedelta | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"flow {self.name!r} has no steps")
        unknown = set(self.fallbacks) - set(DEFAULT_FALLBACKS)
        if unknown:
            raise ValueError(f"flow {self.name!r}: no fallback for {sorted(unknown)}")
        self.fallbacks = {**DEFAULT_FALLBACKS, **self.fallbacks}
        if self.conversation_timeout is not None and self.conversation_timeout <= timedelta(0):
            raise ValueError(f"flow {self.name!r}: conversation_timeout must be positive")
        for i, step in enumerate(self.steps):
            if not step.name or step.name[0] == "_" or step.name[-1] == "_" or SEP in step.name:
                raise ValueError(f"flow {self.name!r}: bad step name {step.name!r}")
            if step.name in self._index:
                raise ValueError(f"flow {self.name!r}: step {step.name!r} declared twice")
            self._index[step.name] = i
            if isinstance(step, Choice) and step.options is None:
                raise ValueError(f"flow {self.name!r}: choice step {step.name!r} has no options")

    # --- Lookup ---------------------------------------------------------------------
    def step(self, name: str) -> Step:
        try:
            return self.steps[self._index[name]]
        except KeyError:
            raise ValueError(f"flow {self.name!r} has no step {name!r}") from None

    def load(self, raw: dict) -> FlowData:
        return self.model.model_validate(raw)

    def dump(self, data: FlowData) -> dict:
        return data.model_dump(mode="json", exclude_none=True)

    # --- Moving through the steps -----------------------------------------------------
    def _next(self, ctx: "Context", data: FlowData) -> Step | None:
        for step in self.steps:
            if getattr(data, step.name, None) is None and step.applies(ctx, data):
                return step
        return None

    def _ask(self, ctx: "Context", data: FlowData, step: Step) -> str:
        if not isinstance(step, Choice):  # only the last reply's options may be tapped
            setattr(data, OPTIONS, None)
        prompt = step.ask(ctx, data)  # may record the options it offered
        rec = ctx.record
        rec.state = f"{self.name}{SEP}{step.name}"
        if not rec.history or rec.history[-1] != step.name:
            rec.history.append(step.name)
        rec.data = self.dump(data)
        return prompt

    def _clear_from(self, data: FlowData, name: str) -> None:
        """Forget the answers of `name` and every step declared after it."""
        for step in self.steps[self._index[name]:]:
            if getattr(data, step.name, None) is not None:
                setattr(data, step.name, None)

    def _advance(self, ctx: "Context", data: FlowData) -> Reply:
        step = self._next(ctx, data)
        if step is None:
            return self._finish(ctx, data)
        return Reply(self._ask(ctx, data, step))

    def timeout(self, default: timedelta) -> timedelta:
        """How long this flow waits for an answer (`default`: the deployment's)."""
        return self.conversation_timeout or default

    def fallback(self, ctx: "Context", command: Universal) -> Reply:
        """The reply to a universal command (退出, 返回) at a step of this flow."""
        return self.fallbacks[command](ctx, self)

    def start(self, ctx: "Context", initial: dict | None = None, parent: Any = None) -> Reply:
        ctx.record.clear()
        began = self.begin(ctx)
        if isinstance(began, Reply):
            return began
        data = self.load({**began, **(initial or {})})
        if parent is not None:  # a nested flow: the key to serve once it finishes
            setattr(data, PARENT, str(getattr(parent, "value", parent)))
        reply = self._advance(ctx, data)
        if ctx.record.state is None or not self.intro:  # finished at once, or no greeting
            return reply
        intro = render("flow/intro", title=self.title)
        return Reply(f"{intro}\n{reply.text}" if intro else reply.text)

    def current(self, ctx: "Context") -> Step | None:
        state = ctx.record.state
        if not state or SEP not in state:
            return None
        name = state.split(SEP, 1)[1]
        return self.steps[self._index[name]] if name in self._index else None

    def ask_again(self, ctx: "Context", step: Step) -> str:
        """The current step's prompt once more (a choice step re-records what it offers), or
        its short re-ask when it declares one (a long notice is not repeated)."""
        if step.reask:
            return render(step.reask)
        return self._ask(ctx, self.load(ctx.record.data), step)

    def input(self, ctx: "Context", step: Step) -> Reply | None:
        """The reply to an answer at `step`; None when a non-sticky flow's step does not
        take it (the flow has then ended and the message is the engine's again)."""
        data = self.load(ctx.record.data)
        try:
            value = step.answer(ctx, data)
        except Invalid as exc:
            if not self.sticky and not exc.goto and not exc.end:
                ctx.record.clear()
                return None
            return self._refused(ctx, data, step, exc)
        setattr(data, step.name, value)
        return self._advance(ctx, data)

    def _refused(self, ctx: "Context", data: FlowData, step: Step, exc: Invalid) -> Reply:
        if exc.end:
            ctx.record.clear()
            return Reply(exc.render())
        if exc.goto:
            target = self.step(exc.goto)
            self._clear_from(data, target.name)
            hist = ctx.record.history
            if target.name in hist:
                del hist[hist.index(target.name) + 1:]
            again = self._next(ctx, data)
            if again is None:  # nothing applies from there: say why and end
                ctx.record.clear()
                return Reply(exc.render())
            return Reply(render("flow/invalid", reason=exc.render(),
                                prompt=self._ask(ctx, data, again)))
        if not exc.again:  # a short re-ask (「您是指…吗」): the reason alone, the data kept
            ctx.record.data = self.dump(data)
            return Reply(exc.render())
        return Reply(render("flow/invalid", reason=exc.render(), prompt=self._ask(ctx, data, step)))

    def _finish(self, ctx: "Context", data: FlowData) -> Reply:
        """Run `finish` as an attempt (`ctx.attempt()`): when it raises `Invalid` its
        writes are undone and the customer is put back at a step; the state is cleared
        only when it succeeds."""
        try:
            with ctx.attempt():
                reply = Reply.of(self.finish(ctx, data))
        except Invalid as exc:
            last = self.current(ctx) or self.steps[-1]
            if not exc.goto and not exc.end:
                exc.goto = last.name if ctx.record.state else None
                if exc.goto is None:
                    exc.end = True
            return self._refused(ctx, data, last, exc)
        ctx.record.clear()
        ctx.resume = getattr(data, PARENT, None)  # a nested flow: the engine serves its parent
        return reply

    def back(self, ctx: "Context") -> Reply:
        data = self.load(ctx.record.data)
        hist = ctx.record.history
        if len(hist) < 2:
            step = self.current(ctx) or self.steps[0]
            return Reply(render("flow/first_step", prompt=self._ask(ctx, data, step)))
        hist.pop()
        prev = self.step(hist[-1])
        self._clear_from(data, prev.name)
        return Reply(render("flow/back", prompt=self._ask(ctx, data, prev)))

    def exit(self, ctx: "Context") -> Reply:
        parent = (ctx.record.data or {}).get(PARENT)
        ctx.record.clear()
        if parent is not None:  # a nested flow: what it was started for is not served either
            vocabulary = ctx.router.vocabulary
            key = vocabulary.key(parent) if vocabulary is not None else None
            label = vocabulary.label.get(key) if key is not None else None
            if label:
                return Reply(render("flow/exit_nested", title=self.title, label=label))
        return Reply(render("flow/exit", title=self.title))


DEFAULT_FALLBACKS: dict[Universal, Fallback] = {
    Universal.EXIT: lambda ctx, flow: flow.exit(ctx),
    Universal.BACK: lambda ctx, flow: flow.back(ctx),
}
