"""The conversation engine: from one inbound message (with the user's record) to a reply.

Order of precedence for text: universal commands (更多, 退出/取消, 返回, 帮助, 人工) in any
state; staff commands (#…); the step of a flow in progress; a menu intent; else a polite
"I did not understand" with suggestions.
"""
from __future__ import annotations

import logging

from bot.conversation.intents import Universal, match, suggestions, universal
from bot.conversation.router import Context, Flow, Invalid, Reply, Router
from bot.infra.texts import render
from menus import Key

log = logging.getLogger(__name__)

SEP = ":"


# --- Flows -----------------------------------------------------------------------------


def current(ctx: Context, router: Router) -> tuple[Flow, int] | None:
    state = ctx.record.state
    if not state or SEP not in state:
        return None
    flow_name, step_name = state.split(SEP, 1)
    flow = router.flows.get(flow_name)
    if flow is None:
        return None
    idx = next((i for i, s in enumerate(flow.steps) if s.name == step_name), None)
    return (flow, idx) if idx is not None else None


def _goto(ctx: Context, flow: Flow, start: int, data: dict, step_dir: int = 1) -> Reply | None:
    """Move to the first applicable step from `start` in direction `step_dir`."""
    i = start
    while 0 <= i < len(flow.steps):
        step = flow.steps[i]
        if step.applies(ctx, data):
            ctx.record.state = f"{flow.name}{SEP}{step.name}"
            ctx.record.data = data
            return Reply(step.ask(ctx, data))
        i += step_dir
    return None


def start_flow(ctx: Context, flow: Flow) -> Reply:
    began = flow.begin(ctx)
    if isinstance(began, Reply):
        return began
    reply = _goto(ctx, flow, 0, dict(began))
    if reply is None:  # nothing to ask: finish at once
        return _finish(ctx, flow, dict(began))
    intro = render("flow/intro", title=flow.title)
    return Reply(f"{intro}\n{reply.text}" if intro else reply.text)


def _finish(ctx: Context, flow: Flow, data: dict) -> Reply:
    ctx.record.state, ctx.record.data = None, {}
    try:
        return Reply.of(flow.finish(ctx, data))
    except Invalid as exc:
        return Reply(exc.render())


def flow_input(ctx: Context, flow: Flow, idx: int) -> Reply:
    step = flow.steps[idx]
    data = dict(ctx.record.data)
    try:
        data[step.name] = step.parse(ctx, ctx.text.strip(), data)
    except Invalid as exc:
        if exc.end:
            ctx.record.state, ctx.record.data = None, {}
            return Reply(exc.render())
        if exc.goto:
            target = next(i for i, s in enumerate(flow.steps) if s.name == exc.goto)
            for s in flow.steps[target:]:
                data.pop(s.name, None)
            again = _goto(ctx, flow, target, data)
            return Reply(render("flow/invalid", reason=exc.render(), prompt=again.text))
        ctx.record.data = data
        return Reply(render("flow/invalid", reason=exc.render(), prompt=step.ask(ctx, data)))
    nxt = _goto(ctx, flow, idx + 1, data)
    return nxt if nxt is not None else _finish(ctx, flow, data)


def flow_back(ctx: Context, flow: Flow, idx: int) -> Reply:
    data = dict(ctx.record.data)
    for s in flow.steps[idx:]:
        data.pop(s.name, None)
    prev = _goto(ctx, flow, idx - 1, data, step_dir=-1)
    if prev is None:
        reply = _goto(ctx, flow, idx, data)
        return Reply(render("flow/first_step", prompt=reply.text if reply else ""))
    data.pop(ctx.record.state.split(SEP, 1)[1], None)
    ctx.record.data = data
    return Reply(render("flow/back", prompt=prev.text))


def flow_exit(ctx: Context, flow: Flow) -> Reply:
    ctx.record.state, ctx.record.data = None, {}
    return Reply(render("flow/exit", title=flow.title))


# --- Dispatch ----------------------------------------------------------------------------


def dispatch(ctx: Context, router: Router) -> Reply:
    msg_type = ctx.msg.type
    if msg_type == "event":
        return dispatch_event(ctx, router)
    if msg_type != "text":
        return Reply(render("unsupported", kind=msg_type))
    return dispatch_text(ctx, router)


def dispatch_event(ctx: Context, router: Router) -> Reply:
    event = ctx.msg.event
    if event == "click":
        key = _key(ctx.msg.key)
        if key is None:
            log.warning("menu click with unknown key %r", ctx.msg.key)
            return Reply(render("menu_outdated"))
        return run_key(ctx, router, key)
    handler = router.events.get(event)
    if handler is None:
        return Reply()  # events nobody listens to get "success"
    return Reply.of(handler(ctx))


def run_key(ctx: Context, router: Router, key: Key) -> Reply:
    handler = router.keys.get(key)
    if handler is None:
        return Reply(render("not_yet"))
    in_flow = current(ctx, router)
    # A menu choice abandons a flow in progress, except the ones that help inside it.
    if in_flow and key not in (Key.HELP, Key.HUMAN):
        ctx.record.state, ctx.record.data = None, {}
        ctx.notices.append(render("flow/abandoned", title=in_flow[0].title))
    return Reply.of(handler(ctx))


def dispatch_text(ctx: Context, router: Router) -> Reply:
    text = ctx.text
    in_flow = current(ctx, router)
    cmd = universal(text)
    if cmd is Universal.MORE:
        return next_page(ctx)
    if cmd is Universal.EXIT:
        return flow_exit(ctx, in_flow[0]) if in_flow else Reply(render("nothing_to_exit"))
    if cmd is Universal.BACK:
        return flow_back(ctx, *in_flow) if in_flow else Reply(render("nothing_to_exit"))
    if isinstance(cmd, Key):
        reply = run_key(ctx, router, cmd)
        if in_flow and cmd is Key.HELP:
            step = in_flow[0].steps[in_flow[1]]
            reply.text += "\n\n" + render("flow/help_hint", title=in_flow[0].title,
                                          prompt=step.ask(ctx, ctx.record.data))
        return reply
    if text.lstrip().startswith(("#", "＃")) and ctx.staff is not None:
        return run_command(ctx, router)
    if in_flow:
        return flow_input(ctx, *in_flow)
    key = match(text)
    if key is not None:
        return run_key(ctx, router, key)
    return Reply(render("unknown", suggestions=suggestions(text)))


def run_command(ctx: Context, router: Router) -> Reply:
    name = ctx.text.strip().lstrip("#＃").split(maxsplit=1)
    cmd = router.commands.get("#" + name[0]) if name else None
    if cmd is None:
        return Reply(render("staff/unknown_command"))
    if ctx.staff.role not in cmd.roles:
        return Reply(render("staff/forbidden", usage=cmd.usage))
    return Reply.of(cmd.handler(ctx))


def _key(raw: str | None) -> Key | None:
    try:
        return Key(raw or "")
    except ValueError:
        return None


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
