"""The conversation engine: from one inbound message (with the user's record) to a reply.

Precedence for text (docs/programme.md, "What a message means"):
1. a staff command (`#…` from a staff openid);
2. emergency words: the advice at once (at a symptoms step the flow goes on);
3. a universal command (更多, 退出/取消, 返回, 帮助, 人工) that is the whole message;
4. the mode (hand-over) or flow step in progress, where its answer parses; at a free-text
   step a whole-message intent asks whether to leave the flow first; a question that is not
   the step's answer gets the FAQ's answer and the step is asked again;
5. a menu intent that is the whole message, or a command form with one inside it (我想约洁牙);
6. small talk, the FAQ, then "I did not understand" with the FAQ's closest questions (the
   message is kept, without the identity, for staff to grow the FAQ).
Asking is not commanding: a question (`intents.is_question`: 洁牙疼不疼, 专家门诊挂号费谁出)
goes to the FAQ and never starts a service; when it names a service the customer's tier may
book, the answer ends with the offer to book it.
The engine also ends idle flows, prepends notices and pages long replies.
"""
from __future__ import annotations

import logging
import time
import tomllib
from dataclasses import replace
from datetime import timedelta
from functools import lru_cache

from bot.conversation.context import Context
from bot.conversation.flow import ANSWER, NEAR, REASON, SEP, UNREAD, Flow, Step, offered_tap
from bot.conversation import emergency, faq
from bot.conversation.intents import Universal, is_question, yes_no
from bot.conversation.message import Kind
from bot.conversation.reply import Invalid, Reply
from bot.conversation.router import BadArgs
from bot.domain import booking_store, unanswered
from bot.domain.vocab import describes_symptoms
from bot.infra.texts import render

log = logging.getLogger(__name__)


def handle(ctx: Context) -> Reply:
    """The whole reply to one message: expiry notice, the handler's reply (and a nested
    flow's parent), paging."""
    settings = ctx.services.settings
    expire_flow(ctx, timedelta(minutes=settings.flow_timeout_minutes))
    reply = dispatch(ctx)
    if ctx.resume is not None:
        reply = resume_parent(ctx, reply)
    if ctx.notices:
        reply.text = "\n\n".join([*ctx.notices, reply.text]).strip()
    if reply.text and not reply.paged:
        reply.text = page_reply(ctx, reply.text, settings.reply_max_bytes)
    return reply


def expire_flow(ctx: Context, default: timedelta) -> None:
    """End a flow idle for longer than its `conversation_timeout` (`default`: the
    deployment's), telling the customer. Modes (a hand-over) keep their own limits."""
    rec = ctx.record
    if not (rec.state and SEP in rec.state):
        return
    flow = ctx.router.flows.get(rec.state.split(SEP, 1)[0])
    limit = flow.timeout(default) if flow is not None else default
    if time.time() - rec.updated_at > limit.total_seconds():
        rec.clear()
        ctx.notices.append(render("flow/expired", minutes=max(1, round(limit.total_seconds() / 60))))


def resume_parent(ctx: Context, reply: Reply) -> Reply:
    """A nested flow has finished: serve the key it was started for (PTB's map_to_parent),
    as if it had been clicked now, after the child's own reply."""
    vocabulary = ctx.router.vocabulary
    key = vocabulary.key(ctx.resume) if vocabulary is not None else None
    ctx.resume = None
    if key is None:
        return reply
    ctx.forget_reads()  # the child changed who this user is (bound now)
    ctx.inbound = replace(ctx.inbound, kind=Kind.CLICK, text="", key=str(key), menu_id="")
    then = run_key(ctx, key)
    then.text = "\n\n".join(t for t in (reply.text, then.text) if t)
    return then


def current(ctx: Context) -> tuple[Flow, Step] | None:
    state = ctx.record.state
    if not state or SEP not in state:
        return None
    flow = ctx.router.flows.get(state.split(SEP, 1)[0])
    if flow is None:
        return None
    step = flow.current(ctx)
    return (flow, step) if step is not None else None


# --- Dispatch ----------------------------------------------------------------------------


def dispatch(ctx: Context) -> Reply:
    kind = ctx.inbound.kind
    if kind is Kind.TEXT:
        return dispatch_text(ctx)
    if kind is Kind.CLICK:
        key = ctx.router.vocabulary.key(ctx.inbound.key)
        if key is None:
            log.warning("menu click with unknown key %r", ctx.inbound.key)
            return Reply(render("menu_outdated"))
        return run_key(ctx, key)
    if kind is Kind.EVENT:
        handler = ctx.router.events.get(ctx.inbound.event)
        return Reply.of(handler(ctx)) if handler else Reply()  # unheard events: "success"
    if kind is Kind.VOICE:
        return Reply(render("voice_unrecognised"))
    return Reply(render("unsupported", kind=ctx.inbound.type))


def run_key(ctx: Context, key) -> Reply:
    router = ctx.router
    handler = router.keys.get(key)
    if handler is None:
        return Reply(render("not_yet"))
    in_flow = current(ctx)
    # A menu choice abandons a flow in progress, except the ones that help inside it.
    if in_flow and key not in (router.vocabulary.help, router.vocabulary.human):
        ctx.record.clear()
        ctx.notices.append(render("flow/abandoned", title=in_flow[0].title))
    ctx.key = key
    if router.needs_customer(key) and ctx.customer is None:
        return Reply.of(router.unbound(ctx))  # the one guard of the personal keys
    return Reply.of(handler(ctx))


def dispatch_text(ctx: Context) -> Reply:
    text = ctx.text
    if text.lstrip().startswith(("#", "＃")):
        # The bot never offers a command as a tappable line: a tap carrying one came from
        # someone else's markup (issue 15 #1) and is never run. A tap on a line the bot did
        # offer is that option, whatever text came with it (the step reads it by its id).
        if ctx.inbound.menu_id:
            if not offered_tap(ctx) and ctx.staff is not None:
                return Reply(render("staff/tapped_command"))
        elif ctx.staff is not None or public_command(ctx) is not None:
            return run_command(ctx)
    in_flow = current(ctx)
    step = in_flow[1] if in_flow else None
    if emergency.is_emergency(text, digits_step=bool(step and step.digits)):
        advice = render("emergency")
        if step is None:
            return Reply(advice)
        if not step.symptoms:  # the flow waits where it was, and says so
            flow = in_flow[0]
            return Reply(render("flow/answered", answer=advice, title=flow.title,
                                prompt=flow.ask_again(ctx, step)))
        ctx.notices.append(advice)
    vocabulary = ctx.router.vocabulary
    cmd = vocabulary.universal(text)
    if cmd is Universal.MORE:
        return next_page(ctx)
    if cmd is Universal.EXIT and ctx.mode:
        return leave_mode(ctx)
    if cmd in (Universal.EXIT, Universal.BACK):  # the flow's fallbacks (default: exit, back)
        return in_flow[0].fallback(ctx, cmd) if in_flow else Reply(render("nothing_to_exit"))
    if cmd is not None:  # the help or the hand-over key
        reply = run_key(ctx, cmd)
        if in_flow and cmd == vocabulary.help:
            flow, step = in_flow
            reply.text += "\n\n" + render("flow/help_hint", title=flow.title,
                                          prompt=step.ask(ctx, flow.load(ctx.record.data)))
        return reply
    if ctx.mode:
        handler = ctx.router.modes.get(ctx.mode)
        reply = handler(ctx) if handler else None
        if reply is not None:
            return Reply.of(reply)
        ctx.record.clear()
    elif in_flow:
        if ctx.inbound.voice:  # the step takes data from what WeChat heard: say what it was
            ctx.notices.append(render("voice_heard", text=text))
        reply = flow_text(ctx, *in_flow)
        if reply is not None:
            return reply
    return understand(ctx, text)


SWITCH = "_switch"  # flow data key: the intent the customer may leave the flow for


def flow_text(ctx: Context, flow: Flow, step: Step) -> Reply | None:
    """The current step's answer (precedence 4); a whole-message intent (5): at a free-text
    step it asks before leaving the flow, at other steps it switches when the text is not an
    answer; a question that is not the step's answer: the FAQ's (6), then the step again."""
    data = ctx.record.data
    vocabulary = ctx.router.vocabulary
    pending = data.pop(SWITCH, None)
    if pending:
        choice = yes_no(ctx.text)
        if choice is True:
            return run_key(ctx, vocabulary.key(pending))
        if choice is False:
            return Reply(render("flow/stay", title=flow.title,
                                prompt=step.ask(ctx, flow.load(data))))
    question = is_question(ctx.text)
    key = vocabulary.exact(ctx.text)
    if key in vocabulary.not_in_flows or (question and key in vocabulary.services):
        key = None  # 确认 inside a flow is the step's, never the reminder's; 洗牙？ asks
    if key is not None and key in ctx.router.keys and step.free_text:
        data[SWITCH] = key.value
        return Reply(render("flow/switch_ask", title=flow.title, label=vocabulary.label[key]))
    if key is not None and key in ctx.router.keys:
        # The step reads it first (its answer, or its own reason: 换一天 at the summary goes
        # back to the date); otherwise the customer asked for something else.
        if step.hears(ctx, ctx.text, flow.load(ctx.record.data)) not in (ANSWER, REASON):
            return run_key(ctx, key)
    if question and flow.sticky and not (step.symptoms and describes_symptoms(ctx.text)):
        answered = answer_at_step(ctx, flow, step)
        if answered is not None:
            return answered
    return flow.input(ctx, step)


def answer_at_step(ctx: Context, flow: Flow, step: Step) -> Reply | None:
    """A question at a step that is not the step's answer: the FAQ's answer, then the step
    again; when the FAQ has no confident answer, a reply that admits it (the hand-over and
    the hotline), then the step again, never 「没能对上您的选择」. None (the step reads it)
    when, at a step that does not take any text, the step's parser reads it (下周三可以吗 at
    the date step) or refuses it with a reason of its own (有深圳的吗 at the city step), or
    would ask back about a near match; at a free-text step when the FAQ has no answer.
    A step that takes symptoms reads questions that describe them (胃疼是不是要做胃镜), and
    a flow that is not sticky (the FAQ's suggestions) lets the message go."""
    heard = UNREAD if step.free_text else step.hears(ctx, ctx.text, flow.load(ctx.record.data))
    if heard in (ANSWER, REASON):
        return None
    tier = held_tier_code(ctx)
    entry = faq.default().best(ctx.text, tier=tier)
    if entry is not None:
        return Reply(render("flow/answered", answer=answer_faq(ctx, entry, ctx.text),
                            title=flow.title, prompt=flow.ask_again(ctx, step)))
    if (step.free_text and not step.symptoms) or heard == NEAR:
        return None  # a name, a hospital: the step reads it; a near match is asked back
    unanswered.record(ctx.session, ctx.text, tier, ctx.now)  # for staff to grow the FAQ
    return Reply(render("flow/unsure", title=flow.title, prompt=flow.ask_again(ctx, step)))


def understand(ctx: Context, text: str) -> Reply:
    """Outside any flow: intents, small talk and the FAQ (precedence 5 and 6). A question
    never starts a service (asking is not commanding)."""
    vocabulary = ctx.router.vocabulary
    question = is_question(text)
    key = vocabulary.exact(text) or vocabulary.asked(text)
    if key is not None and not (question and key in vocabulary.services):
        return run_key(ctx, key)  # 我的预约, and 我的预约呢: what is asked after is shown
    key = vocabulary.match(text)
    if key is not None and not question:
        return run_key(ctx, key)  # a command form: 我要洗牙, 帮我约体检
    book = faq.default()
    talk = book.smalltalk(text)
    if talk is not None:
        return Reply(faq.smalltalk_answer(talk))
    tier = held_tier_code(ctx)
    offer = booking_offer(ctx, key)
    best = book.best(text, tier=tier)
    if best is not None:
        return Reply(with_offer(answer_faq(ctx, best, text), offer))
    if key is not None and key not in vocabulary.services:
        return run_key(ctx, key)  # 请问我的预约呢: not a service, so nothing starts
    unanswered.record(ctx.session, text, tier, ctx.now)  # for staff to grow the FAQ
    hits = [entry for entry, _ in book.search(text, k=3, tier=tier)]
    suggest = ctx.router.flows.get("faq_suggest")
    if hits and suggest is not None:
        reply = ctx.start(suggest, suggested=hits, asked=text)
        return Reply(with_offer(render("unknown", has_suggestions=True) + "\n" + reply.text, offer))
    return Reply(with_offer(render("unknown", has_suggestions=False), offer))


def booking_offer(ctx: Context, key) -> str | None:
    """The booking a question names (洁牙疼不疼: 预约洁牙), when the customer's held tier has it."""
    vocabulary = ctx.router.vocabulary
    tier = held_tier_code(ctx)
    if key not in vocabulary.services or tier is None or key not in ctx.router.keys:
        return None
    service = ctx.services.rules.service(vocabulary.services[key])
    return vocabulary.label[key] if service.per_year and tier in service.tiers else None


def with_offer(text: str, offer: str | None) -> str:
    return f"{text}\n\n{render('faq/offer', label=offer)}" if offer else text


def held_tier_code(ctx: Context) -> str | None:
    customer = ctx.customer if ctx.account and ctx.account.customer_id else None
    return customer.tier if customer is not None else None


def answer_faq(ctx: Context, entry_id: str, text: str = "") -> str:
    """The entry's answer, with the rules' facts, what the question names (tiers, a service,
    a city) and, for the entries that list them, the institutions."""
    book = faq.default()
    facts = dict(faq_facts(ctx.services.settings.rules_file))
    services = ctx.router.vocabulary.services
    key = ctx.router.vocabulary.match(text) if text else None
    facts.update(faq.asked(text, facts, held=held_tier_code(ctx), service=services.get(key)))
    start, end = ctx.services.rules.human_service.hours
    facts["hours"] = f"{start:%H:%M}–{end:%H:%M}"
    facts["festival_months"] = list(ctx.services.rules.festival.months)  # with its override
    if "institutions" in book.entry(entry_id).lookups:
        places = institution_rows(ctx)
        cities = [c for c in dict.fromkeys(p["city"] for p in places) if c in text]
        service = facts["asked_service"]
        facts["asked_cities"] = cities
        facts["institutions"] = [p for p in places if (not cities or p["city"] in cities)
                                 and (service is None or service in p["services"])]
    return book.answer(entry_id, **facts)


def institution_rows(ctx: Context) -> list[dict]:
    """Every institution giving a bookable service, by city and name."""
    rows: dict[str, dict] = {}
    for service in ctx.router.vocabulary.services.values():
        for p in booking_store.institutions(ctx.conn, service):
            rows.setdefault(p.code, {"name": p.name, "city": p.city, "kind": p.kind,
                                     "services": sorted(p.services)})
    return sorted(rows.values(), key=lambda r: (r["city"], r["name"]))


@lru_cache(maxsize=4)
def faq_facts(rules_file) -> dict:
    with open(rules_file, "rb") as fh:
        return faq.rules_facts(tomllib.load(fh))


def leave_mode(ctx: Context) -> Reply:
    mode = ctx.mode
    ctx.record.clear()
    return Reply(render(f"modes/{mode}_left"))


def _split_command(ctx: Context):
    name, _, rest = ctx.text.strip().lstrip("#＃").partition(" ")
    cmd = ctx.router.commands.get("#" + name.strip()) if name else None
    return cmd, rest


def public_command(ctx: Context):
    """The command a user who is not staff may send (#注册), when the text is one; any other
    `#…` from them is ordinary text, and nothing tells them staff commands exist."""
    cmd, _ = _split_command(ctx)
    return cmd if cmd is not None and cmd.public else None


def run_command(ctx: Context) -> Reply:
    cmd, rest = _split_command(ctx)
    if cmd is None:
        return Reply(render("staff/unknown_command"))
    if not cmd.public and ctx.staff.role not in cmd.roles:
        return Reply(render("staff/forbidden", usage=cmd.usage, roles=cmd.roles,
                            role=ctx.staff.role))
    try:
        args = cmd.bind(rest, ctx)
    except BadArgs as exc:
        return Reply(render("staff/usage", usage=cmd.usage, wrong=str(exc)))
    try:
        return Reply.of(cmd.handler(ctx, **args))
    except Invalid as exc:
        return Reply(exc.render())


# --- Pages -------------------------------------------------------------------------------


def paginate(text: str, limit: int) -> list[str]:
    """Split `text` into pages of at most `limit` UTF-8 bytes, at line breaks where possible."""
    if len(text.encode()) <= limit:
        return [text]
    pages, cur = [], ""
    for line in text.split("\n"):
        while len(line.encode()) > limit:  # a single overlong line: cut by characters
            cut = _cut(line, limit)
            if cur:
                pages.append(cur)
                cur = ""
            pages.append(line[:cut])
            line = line[cut:]
        candidate = f"{cur}\n{line}" if cur else line
        if len(candidate.encode()) > limit:
            pages.append(cur)
            cur = line
        else:
            cur = candidate
    if cur:
        pages.append(cur)
    return pages


def _cut(line: str, limit: int) -> int:
    n = 0
    for i, ch in enumerate(line):
        n += len(ch.encode())
        if n > limit:
            return i
    return len(line)


def page_reply(ctx: Context, text: str, limit: int) -> str:
    """Keep a reply within WeChat's limit; the rest waits for 「更多」."""
    if len(text.encode()) <= limit:
        ctx.record.pages = []
        return text
    footer = render("more_footer")
    pages = paginate(text, limit - len(footer.encode()) - 2)
    ctx.record.pages = pages[1:]
    return f"{pages[0]}\n\n{footer}"


def next_page(ctx: Context) -> Reply:
    if not ctx.record.pages:
        return Reply(render("no_more"))
    text = ctx.record.pages.pop(0)
    if ctx.record.pages:
        text = f"{text}\n\n{render('more_footer')}"
    return Reply(text, paged=True)
