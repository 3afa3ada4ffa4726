"""A stand-in for WeChat's API server that speaks its real formats (token, stable_token,
customer-service messages, template messages, menu create/get, user tags, mass send by tag;
errors as {"errcode", "errmsg"}). Tests run it on loopback; `serve --demo` mounts it so a
newcomer sees what the bot would push."""
from __future__ import annotations

import itertools
import json
import logging
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("wechat-double")

INVALID_CREDENTIAL = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
BAD_SECRET = {"errcode": 40125, "errmsg": "invalid appsecret"}
BAD_JSON = {"errcode": 47001, "errmsg": "data format error"}
NO_MENU = {"errcode": 46003, "errmsg": "menu no exist"}
FORCE_TOO_OFTEN = {"errcode": 45011,
                   "errmsg": "api minute-quota reach limit  mustslower  retry next minute"}


def create_double(app_id: str, app_secret: str, *, echo: bool = False) -> FastAPI:
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
    ids = itertools.count(1000)
    # User tags: {tag_id: name} and {tag_id: set of openids}; the menu as created.
    app.state.tags, app.state.tag_members = {}, {}
    app.state.menu = None
    tag_ids = itertools.count(100)

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
        if not authorised(request):
            return JSONResponse(INVALID_CREDENTIAL)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(BAD_JSON)
        if not isinstance(body, dict) or any(k not in body for k in required):
            return JSONResponse(BAD_JSON)
        if app.state.fail_next:
            code = app.state.fail_next.pop(0)
            return JSONResponse({"errcode": code, "errmsg": "simulated failure"})
        app.state.sent.append({"api": api, "body": body, "at": time.time()})
        if echo:
            log.info("WeChat double received %s: %s", api, body)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": next(ids)})

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
        tag_id = next(tag_ids)
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
        res = await accept(request, "mass", ("filter", "msgtype"))
        if json.loads(res.body).get("errcode") != 0:
            return res
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
        msg_id = next(ids)
        entry.update(reached=sorted(reached), msg_id=msg_id)
        return {"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id,
                "msg_data_id": msg_id * 10}

    return app
