"""A stand-in for WeChat's API server that speaks its real formats (token, stable_token,
customer-service messages, template messages, menu; errors as {"errcode", "errmsg"}). Tests run it on loopback; `serve --demo` mounts it so a
newcomer sees what the bot would push."""
from __future__ import annotations

import itertools
import logging
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("wechat-double")

INVALID_CREDENTIAL = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
BAD_SECRET = {"errcode": 40125, "errmsg": "invalid appsecret"}
BAD_JSON = {"errcode": 47001, "errmsg": "data format error"}
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

    def authorised(request: Request) -> bool:
        return (not app.state.reject_all
                and request.query_params.get("access_token") in app.state.tokens)

    def revoke(token: str) -> None:
        """Make WeChat refuse `token` from now on (as after a refresh elsewhere)."""
        app.state.tokens.discard(token)
        if app.state.stable and app.state.stable[0] == token:
            app.state.stable = None

    def reset() -> None:
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
        return await accept(request, "menu", ("button",))

    return app
