"""A stand-in for WeChat's API server that speaks its real formats (token, customer-service
messages, template messages, menu). Tests run it on loopback; `serve --demo` mounts it so a
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


def create_double(app_id: str, app_secret: str, *, echo: bool = False) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tokens = set()
    app.state.sent = []  # every accepted call: {"api": ..., "body": ...}
    app.state.fail_next = []  # errcodes to answer with, first in first out
    ids = itertools.count(1000)

    def authorised(request: Request) -> bool:
        return request.query_params.get("access_token") in app.state.tokens

    @app.get("/cgi-bin/token")
    def token(grant_type: str = "", appid: str = "", secret: str = ""):
        if grant_type != "client_credential" or appid != app_id or secret != app_secret:
            return JSONResponse(BAD_SECRET)
        tok = secrets.token_urlsafe(24)
        app.state.tokens.add(tok)
        return {"access_token": tok, "expires_in": 7200}

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
