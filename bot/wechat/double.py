"""A stand-in for WeChat's API server that speaks its real formats (token, stable_token,
customer-service messages, template messages, menu create/get, user tags, mass send by tag;
errors as {"errcode", "errmsg"}). Tests run it on loopback; `serve --demo` mounts it so a
newcomer sees what the bot would push.

Like WeChat it checks template data against the field rules of May 2023 (47003 when a value
breaks them; implemented here from WeChat's documentation, independently of the bot's own
formatter), de-duplicates a template's `client_msg_id` and a mass send's `clientmsgid` for
ten minutes, and answers 43004 for users who unsubscribed (`unfollowed`).

With an `engine` (`serve --demo`, and the CLI on the demo's settings) the state WeChat would
hold (tokens, tags and their members, the menu, who unfollowed) lives in the demo database
(`wechat_double_state`): loaded before each call and saved after it, so every worker, the
CLI and a restart see one double. Without one (the tests), it lives in memory.

Told to fail: `fail_next` takes errcodes (40001, 45009, -1, 43004, 47003 …), "500" (an
HTTP 500) or "timeout" (no answer for `timeout_seconds`), first in first out; `outage_until`
(epoch seconds) answers -1 to every send until then; `delay` adds seconds to every send.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Collection, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.infra.privacy import mask_name

log = logging.getLogger("wechat-double")

INVALID_CREDENTIAL = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
BAD_SECRET = {"errcode": 40125, "errmsg": "invalid appsecret"}
BAD_JSON = {"errcode": 47001, "errmsg": "data format error"}
NO_MENU = {"errcode": 46003, "errmsg": "menu no exist"}
DEDUP_SECONDS = 600.0  # WeChat remembers client_msg_id / clientmsgid this long
_HAN = r"\u3400-\u9fff"


def field_error(key: str, value: str) -> str | None:
    """Why `value` breaks WeChat's rule for the template field `key` (None: it is fine)."""
    kind = re.sub(r"\d+$", "", key)
    n = len(value)
    han = re.findall(f"[{_HAN}]", value)
    if key in ("first", "remark"):
        return "first/remark are no longer allowed"
    if kind == "thing":
        return None if 0 < n <= 20 else "thing: 1-20 characters"
    if kind == "character_string":
        return None if 0 < n <= 32 and not han else "character_string: 32, no Chinese"
    if kind == "number":
        return None if n <= 32 and re.fullmatch(r"-?\d+(\.\d+)?", value) else "number"
    if kind == "letter":
        return None if n <= 32 and re.fullmatch(r"[A-Za-z]+", value) else "letter"
    if kind == "symbol":
        return None if 0 < n <= 5 and not re.search(rf"[\w{_HAN}\s]", value) else "symbol"
    if kind == "amount":
        return None if re.fullmatch(r"[¥$€£]?\d{1,10}(\.\d+)?元?", value) and len(
            re.sub(r"\D", "", value.split(".")[0])) <= 10 else "amount"
    if kind == "phone_number":
        return None if 0 < n <= 17 and re.fullmatch(r"[\d+\-() ]+", value) else "phone_number"
    if kind == "car_number":
        return None if 0 < n <= 8 and re.fullmatch(
            rf"[{_HAN}A-Za-z0-9][A-Za-z0-9]*[{_HAN}A-Za-z0-9]?", value) else "car_number"
    if kind == "name":
        if han:
            return None if n <= 10 and re.fullmatch(rf"[{_HAN}·]+", value) else "name: 10 Chinese"
        return None if 0 < n <= 20 and re.fullmatch(r"[A-Za-z .\-·]+", value) else "name: 20"
    if kind == "phrase":
        return None if 0 < n <= 5 and re.fullmatch(f"[{_HAN}]+", value) else "phrase: 5 Chinese"
    day = r"\d{4}年\d{1,2}月\d{1,2}日"
    clock = r"([01]\d|2[0-3]):[0-5]\d"
    if kind == "time":
        one = rf"({day} )?{clock}"
        return None if re.fullmatch(rf"{one}(~{one})?", value) else "time"
    if kind == "date":
        one = rf"{day}( {clock})?"
        return None if re.fullmatch(rf"{one}(~{one})?", value) else "date"
    if kind == "const":
        return None
    return f"unknown field type {kind}"


FORCE_TOO_OFTEN = {"errcode": 45011,
                   "errmsg": "api minute-quota reach limit  mustslower  retry next minute"}


def _dump_state(state) -> str:
    """What the double shares through the database, as JSON."""
    return json.dumps({
        "tokens": sorted(state.tokens), "stable": state.stable, "last_forced": state.last_forced,
        "tags": {str(k): v for k, v in state.tags.items()},
        "members": {str(k): sorted(v) for k, v in state.tag_members.items()},
        "menu": state.menu, "unfollowed": sorted(state.unfollowed)},
        ensure_ascii=False, sort_keys=True)


def _load_state(state, raw: str) -> None:
    value = json.loads(raw)
    state.tokens = set(value.get("tokens") or [])
    stable = value.get("stable")
    state.stable = tuple(stable) if stable else None
    state.last_forced = float(value.get("last_forced") or 0.0)
    state.tags = {int(k): v for k, v in (value.get("tags") or {}).items()}
    state.tag_members = {int(k): set(v) for k, v in (value.get("members") or {}).items()}
    state.menu = value.get("menu")
    state.unfollowed = set(value.get("unfollowed") or [])


class SharedState:
    """The double's state in the database (one row per app id)."""

    def __init__(self, engine, app_id: str) -> None:
        from models import WechatDoubleState

        self.engine, self.app_id = engine, app_id
        self.table = WechatDoubleState.__table__

    def read(self) -> str | None:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return conn.execute(select(self.table.c.value)
                                .where(self.table.c.appid == self.app_id)).scalar()

    def write(self, value: str) -> None:
        from bot.infra.db import upsert

        with self.engine.begin() as conn:
            conn.execute(upsert(self.engine, self.table).values(appid=self.app_id, value=value)
                         .on_conflict_do_update(index_elements=[self.table.c.appid],
                                                set_={"value": value}))


def logged(api: str, body: dict, name_fields: Mapping[str, Collection[str]]) -> dict:
    """What the log shows of an accepted call: a template message's fields that carry a
    person's name (`name_fields`, by template id) masked as every reply masks a name
    ("钱大山" -> "钱**"); the rest as received. `body` itself is not touched."""
    names = name_fields.get(body.get("template_id", ""), ()) if api == "template" else ()
    data = body.get("data")
    if not names or not isinstance(data, dict):
        return body
    masked = {k: ({**v, "value": mask_name(v.get("value"))}
                  if k in names and isinstance(v, dict) else v) for k, v in data.items()}
    return {**body, "data": masked}


def create_double(app_id: str, app_secret: str, *, echo: bool = False, engine=None,
                  name_fields: Mapping[str, Collection[str]] | None = None) -> FastAPI:
    """The double's app. `echo`: log every accepted send (the demo), the template fields
    `name_fields` names (template id -> keywords) masked."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tokens = set()
    app.state.sent = []  # every accepted call: {"api": ..., "body": ...}
    app.state.fail_next = []  # errcodes to answer with, first in first out
    # Told to answer 40001 to every call, whatever its token (`reject_all = True`).
    app.state.reject_all = False
    # stable_token: the token WeChat holds, when it expires, the forced refreshes so far.
    app.state.stable = None  # (token, expires_at)
    app.state.token_fetches = []  # every stable_token answered: {"force": bool, "at": time}
    app.state.issued = []  # every token ever handed out
    app.state.force_interval = 30.0  # WeChat: one forced refresh per 30 s
    app.state.last_forced = 0.0
    app.state.client_msgs = {}  # client_msg_id -> (first seen, msgid)
    app.state.duplicates = []  # sends WeChat de-duplicated
    app.state.unfollowed = set()  # openids that unsubscribed: 43004
    app.state.outage_until = 0.0
    app.state.delay = 0.0
    app.state.timeout_seconds = 8.0
    app.state.calls = 0  # every send call received, failed or not
    # Message ids unique across workers and restarts (the bot matches reports by them).
    ids = itertools.count(int(time.time() * 1000) % 10**12)
    # User tags: {tag_id: name} and {tag_id: set of openids}; the menu as created.
    app.state.tags, app.state.tag_members = {}, {}
    app.state.menu = None

    def next_tag_id() -> int:
        return max(app.state.tags, default=99) + 1

    if engine is not None:
        from starlette.concurrency import run_in_threadpool

        shared = SharedState(engine, app_id)

        @app.middleware("http")
        async def through_the_database(request: Request, call_next):
            """Every call sees what any worker (or the CLI) left, and leaves what it changed."""
            raw = await run_in_threadpool(shared.read)
            if raw:
                _load_state(app.state, raw)
            before = raw or _dump_state(app.state)
            response = await call_next(request)
            after = _dump_state(app.state)
            if after != before:
                await run_in_threadpool(shared.write, after)
            return response

    def authorised(request: Request) -> bool:
        return (not app.state.reject_all
                and request.query_params.get("access_token") in app.state.tokens)

    def revoke(token: str) -> None:
        """Make WeChat refuse `token` from now on (as after a refresh elsewhere)."""
        app.state.tokens.discard(token)
        if app.state.stable and app.state.stable[0] == token:
            app.state.stable = None

    def reset() -> None:
        app.state.tags.clear()
        app.state.tag_members.clear()
        app.state.menu = None
        app.state.tokens.clear()
        app.state.sent.clear()
        app.state.fail_next.clear()
        app.state.token_fetches.clear()
        app.state.reject_all, app.state.stable, app.state.last_forced = False, None, 0.0
        app.state.force_interval = 30.0
        app.state.client_msgs.clear()
        app.state.duplicates.clear()
        app.state.unfollowed.clear()
        app.state.outage_until, app.state.delay, app.state.calls = 0.0, 0.0, 0

    app.state.revoke, app.state.reset = revoke, reset

    @app.get("/cgi-bin/token")
    def token(grant_type: str = "", appid: str = "", secret: str = ""):
        if grant_type != "client_credential" or appid != app_id or secret != app_secret:
            return JSONResponse(BAD_SECRET)
        tok = secrets.token_urlsafe(24)
        app.state.tokens.add(tok)
        app.state.issued.append(tok)
        return {"access_token": tok, "expires_in": 7200}

    @app.post("/cgi-bin/stable_token")
    async def stable_token(request: Request):
        """WeChat's stable access token: the normal mode returns the token it already holds
        (with its remaining lifetime); force_refresh makes a new one and invalidates the old,
        at most once per `force_interval` seconds."""
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(BAD_JSON)
        if not isinstance(body, dict) or body.get("grant_type") != "client_credential":
            return JSONResponse(BAD_JSON)
        if body.get("appid") != app_id or body.get("secret") != app_secret:
            return JSONResponse(BAD_SECRET)
        now = time.time()
        force = body.get("force_refresh") is True
        if force:
            if now - app.state.last_forced < app.state.force_interval:
                return JSONResponse(FORCE_TOO_OFTEN)
            app.state.last_forced = now
            if app.state.stable:
                app.state.tokens.discard(app.state.stable[0])
                app.state.stable = None
        app.state.token_fetches.append({"force": force, "at": now})
        if app.state.stable is None or app.state.stable[1] <= now:
            tok = secrets.token_urlsafe(24)
            app.state.tokens.add(tok)
            app.state.issued.append(tok)
            app.state.stable = (tok, now + 7200)
        tok, expires_at = app.state.stable
        return {"access_token": tok, "expires_in": int(expires_at - now)}

    async def accept(request: Request, api: str, required: tuple[str, ...]):
        if app.state.delay:
            await asyncio.sleep(app.state.delay)
        if not authorised(request):
            return JSONResponse(INVALID_CREDENTIAL)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(BAD_JSON)
        if not isinstance(body, dict) or any(k not in body for k in required):
            return JSONResponse(BAD_JSON)
        app.state.calls += 1
        if app.state.fail_next:
            code = app.state.fail_next.pop(0)
            if code in (500, "500"):
                return JSONResponse({"error": "internal"}, status_code=500)
            if code == "timeout":
                await asyncio.sleep(app.state.timeout_seconds)
                return JSONResponse({"errcode": -1, "errmsg": "system error"})
            return JSONResponse({"errcode": int(code), "errmsg": "simulated failure"})
        if time.time() < app.state.outage_until:
            return JSONResponse({"errcode": -1, "errmsg": "system error"})
        touser = body.get("touser")
        if touser and touser in app.state.unfollowed:
            return JSONResponse({"errcode": 43004, "errmsg": "require subscribe"})
        if api == "template":
            data = body.get("data")
            if not isinstance(data, dict) or not data:
                return JSONResponse({"errcode": 47003, "errmsg": "argument invalid! data"})
            for key, item in data.items():
                value = item.get("value") if isinstance(item, dict) else None
                why = "missing value" if not isinstance(value, str) else field_error(key, value)
                if why is None and isinstance(item, dict) and "color" in item:
                    why = "color is no longer allowed"
                if why:
                    return JSONResponse({"errcode": 47003,
                                         "errmsg": f"argument invalid! data.{key}.value {why}"})
        dedup = body.get("client_msg_id") or body.get("clientmsgid")
        now = time.time()
        if dedup:
            seen = app.state.client_msgs.get(dedup)
            if seen and now - seen[0] < DEDUP_SECONDS:
                app.state.duplicates.append({"api": api, "body": body, "at": now})
                return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": seen[1],
                                     "msg_id": seen[1]})
        msgid = next(ids)
        if dedup:
            app.state.client_msgs[dedup] = (now, msgid)
        app.state.sent.append({"api": api, "body": body, "at": now})
        if echo:
            log.info("WeChat double received %s: %s", api, logged(api, body, name_fields or {}))
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": msgid, "msg_id": msgid,
                             "msg_data_id": msgid})

    @app.post("/cgi-bin/message/custom/send")
    async def custom_send(request: Request):
        return await accept(request, "custom", ("touser", "msgtype"))

    @app.post("/cgi-bin/message/template/send")
    async def template_send(request: Request):
        return await accept(request, "template", ("touser", "template_id", "data"))

    @app.post("/cgi-bin/menu/create")
    async def menu_create(request: Request):
        res = await accept(request, "menu", ("button",))
        if json.loads(res.body).get("errcode") == 0:
            app.state.menu = app.state.sent[-1]["body"]
            return JSONResponse({"errcode": 0, "errmsg": "ok"})
        return res

    @app.get("/cgi-bin/menu/get")
    def menu_get(request: Request):
        if not authorised(request):
            return JSONResponse(INVALID_CREDENTIAL)
        if app.state.menu is None:
            return JSONResponse(NO_MENU)
        return {"menu": {"button": app.state.menu["button"]}}

    @app.get("/cgi-bin/get_current_selfmenu_info")
    def selfmenu_info(request: Request):
        if not authorised(request):
            return JSONResponse(INVALID_CREDENTIAL)
        if app.state.menu is None:
            return {"is_menu_open": 0}
        return {"is_menu_open": 1, "selfmenu_info": {"button": [
            {"name": top["name"], "sub_button": {"list": top.get("sub_button", [])}}
            for top in app.state.menu["button"]]}}

    # --- User tags (用户标签管理) -----------------------------------------------------------

    @app.post("/cgi-bin/tags/create")
    async def tags_create(request: Request):
        res = await accept(request, "tags/create", ("tag",))
        if json.loads(res.body).get("errcode") != 0:
            return res
        name = str((app.state.sent[-1]["body"].get("tag") or {}).get("name") or "")
        if not name or len(name.encode()) > 30:
            return JSONResponse({"errcode": 45158, "errmsg": "tag name too long"})
        if name in app.state.tags.values():
            return JSONResponse({"errcode": 45157, "errmsg": "invalid tag name"})
        tag_id = next_tag_id()
        app.state.tags[tag_id] = name
        app.state.tag_members[tag_id] = set()
        return {"tag": {"id": tag_id, "name": name}}

    @app.get("/cgi-bin/tags/get")
    def tags_get(request: Request):
        if not authorised(request):
            return JSONResponse(INVALID_CREDENTIAL)
        return {"tags": [{"id": i, "name": n, "count": len(app.state.tag_members[i])}
                         for i, n in app.state.tags.items()]}

    async def members(request: Request, api: str, add: bool):
        res = await accept(request, api, ("openid_list", "tagid"))
        if json.loads(res.body).get("errcode") != 0:
            return res
        body = app.state.sent[-1]["body"]
        openids, tag_id = body["openid_list"], body["tagid"]
        if not isinstance(openids, list) or not openids or len(openids) > 50:
            return JSONResponse({"errcode": 40032, "errmsg": "invalid openid list size"})
        if tag_id not in app.state.tags:
            return JSONResponse({"errcode": 45159, "errmsg": "invalid tag id"})
        group = app.state.tag_members[tag_id]
        (group.update if add else group.difference_update)(openids)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    @app.post("/cgi-bin/tags/members/batchtagging")
    async def batch_tagging(request: Request):
        return await members(request, "tags/batchtagging", True)

    @app.post("/cgi-bin/tags/members/batchuntagging")
    async def batch_untagging(request: Request):
        return await members(request, "tags/batchuntagging", False)

    # --- Mass send (群发) by tag --------------------------------------------------------------

    @app.post("/cgi-bin/message/mass/sendall")
    async def mass_sendall(request: Request):
        before = len(app.state.sent)
        res = await accept(request, "mass", ("filter", "msgtype"))
        answer = json.loads(res.body)
        if answer.get("errcode") != 0 or len(app.state.sent) == before:
            return res  # refused, or a retry WeChat recognises by its clientmsgid
        entry = app.state.sent[-1]
        flt = entry["body"]["filter"]
        if not isinstance(flt, dict) or "is_to_all" not in flt:
            return JSONResponse(BAD_JSON)
        if flt["is_to_all"] is True:
            reached = set().union(*app.state.tag_members.values()) if app.state.tag_members else set()
        elif flt.get("tag_id") in app.state.tags:
            reached = set(app.state.tag_members[flt["tag_id"]])
        else:
            return JSONResponse({"errcode": 40050, "errmsg": "invalid tag_id"})
        msg_id = answer["msg_id"]
        entry.update(reached=sorted(reached), msg_id=msg_id)
        return {"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id,
                "msg_data_id": msg_id * 10}

    # --- Not WeChat's: what this double received for one user, for the simulator -------------

    @app.get("/double/inbox")
    def inbox(openid: str = "", after: int = 0):
        """Every accepted customer-service message, template message and mass send that
        reached `openid`, from the `after`-th entry of the log on (`next` continues)."""
        log_ = app.state.sent
        start = after if 0 <= after <= len(log_) else 0  # the log was reset: from the start
        items = [dict(seq=i, api=e["api"], at=e["at"], body=e["body"])
                 for i, e in enumerate(log_[start:], start)
                 if openid and (e["body"].get("touser") == openid
                                or (e["api"] == "mass" and openid in e.get("reached", ())))]
        return {"messages": items, "next": len(log_)}

    return app


def serve_local(app_id: str, app_secret: str, engine) -> str:
    """The double (its state in `engine`'s database) served on a free loopback port by a
    daemon thread of this process, for the CLI on the demo's settings; returns its base
    URL. It lives as long as the process."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_double(app_id, app_secret, engine=engine),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="wechat-double", daemon=True).start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}"
