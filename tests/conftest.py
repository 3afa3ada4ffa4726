"""Test fixtures: real databases (a fresh SQLite file per test, or a fresh PostgreSQL
database per run when DATABASE_URL says so), real Redis when REDIS_URL is set, a loopback
WeChat API double, and a WeChat-side client that signs and encrypts as WeChat does."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from bot.app import create_app
from bot.cli import upgrade_database
from bot.infra.config import load_settings
from bot.wechat.simulator import WeChatSide, event_xml, message_xml, text_xml
from bot.wechat.double import create_double

APP_ID = "wx1234567890abcdef"
APP_SECRET = "test-secret"
TOKEN = "testtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SECRET_KEY = "test-secret-key-0123456789abcdef"

PG_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")
USE_PG = PG_URL.startswith("postgresql")


# --- The rules every template reads ----------------------------------------------------------

_DEFAULT_RULES = []


@pytest.fixture(autouse=True)
def template_rules():
    """The repository's rules.toml as the templates' `rules` (bot.infra.texts.set_rules), for
    a test that renders without building the services; building them (an app) sets theirs."""
    from bot.domain.rules import load_rules
    from bot.infra import texts

    if not _DEFAULT_RULES:
        _DEFAULT_RULES.append(load_rules(Path(__file__).resolve().parent.parent / "rules.toml"))
    texts.set_rules(_DEFAULT_RULES[0])
    yield _DEFAULT_RULES[0]


# --- WeChat's API, on loopback -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app, port: int | None = None, **options):
    """`app` served by uvicorn on a loopback port (a free one unless given: an app that must
    know its own address first), in a thread; `options` go to uvicorn."""
    port = port or _free_port()
    options = {"log_level": "warning", **options}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    app.state.base_url = f"http://127.0.0.1:{port}"
    return server, thread


@pytest.fixture(scope="session")
def wechat_api():
    """WeChat's API double served on a loopback port (wechatpy speaks real HTTP to it)."""
    app = create_double(APP_ID, APP_SECRET)
    server, thread = _serve(app)
    yield app
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="session")
def sms_gateway():
    """An SMS gateway on loopback: records what it accepts; `fail_next` answers 500s."""
    app = FastAPI()
    app.state.sent, app.state.fail_next = [], 0

    @app.post("/sms/send")
    async def send(request: Request):
        if request.headers.get("authorization") != "Bearer gw-token":
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        if app.state.fail_next:
            app.state.fail_next -= 1
            return JSONResponse({"error": "busy"}, status_code=503)
        app.state.sent.append(await request.json())
        return {"ok": True}

    server, thread = _serve(app)
    yield app
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def double(wechat_api):
    """The WeChat double, reset before and after the test (tokens, failures, logs)."""
    wechat_api.state.reset()
    yield wechat_api
    wechat_api.state.reset()


@pytest.fixture
def sent(wechat_api):
    state = wechat_api.state
    state.sent.clear()
    state.fail_next.clear()
    # Each test's database numbers its rows afresh: forget the client_msg_ids seen before.
    state.client_msgs.clear()
    state.duplicates.clear()
    state.unfollowed.clear()
    state.outage_until, state.delay, state.timeout_seconds = 0.0, 0.0, 8.0
    return state.sent


# --- Databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory):
    """A migrated database: a SQLite template file, or a fresh PostgreSQL database."""
    if USE_PG:
        name = f"vipbot_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name
        upgrade_database(_settings(url))
        yield url
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade_database(_settings(f"sqlite:///{path}"))
        yield path


@pytest.fixture
def db_url(migrated_db, tmp_path):
    if USE_PG:
        eng = create_engine(migrated_db)
        with eng.begin() as c:
            tables = [r[0] for r in c.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename <> 'alembic_version'"))]
            c.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        eng.dispose()
        return migrated_db
    path = tmp_path / "bot.db"
    shutil.copy(migrated_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url):
    """An engine on the test's database, as the bot makes them."""
    from bot.infra.db import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _settings(db_url: str, **kw):
    values = dict(wechat_app_id=APP_ID, wechat_app_secret=APP_SECRET, wechat_token=TOKEN,
                  wechat_encoding_aes_key=AES_KEY, secret_key=SECRET_KEY, database_url=db_url,
                  redis_url="", rules_file=Path(__file__).resolve().parent.parent / "rules.toml")
    values.update(kw)
    return load_settings(_env_file=None, **values)


def _message_mode(request) -> str:
    """The account's message mode for this test: the WeChat side's mode when the test is
    parametrised by `mode`, else plain (tests that speak safe mode say so with
    `@pytest.mark.settings(wechat_message_mode="safe")`)."""
    if "mode" in request.fixturenames:
        return request.getfixturevalue("mode")
    return "plain"


@pytest.fixture
def settings(request, db_url, wechat_api):
    """Test settings; `@pytest.mark.settings(name=value)` overrides any of them."""
    marker = request.node.get_closest_marker("settings")
    overrides = {"wechat_message_mode": _message_mode(request), **(marker.kwargs if marker else {})}
    return _settings(db_url, wechat_api_base_url=wechat_api.state.base_url,
                     redis_url=REDIS_URL, **overrides, redis_prefix=f"vipbot-test:{uuid.uuid4().hex[:8]}:")


# --- The bot, through its HTTP door ------------------------------------------------------------


class WeChat:
    """Plays WeChat's servers: posts signed (and encrypted) messages to /wechat."""

    def __init__(self, client: httpx.AsyncClient, mode: str = "plain") -> None:
        self.client = client
        self.side = WeChatSide(TOKEN, APP_ID, AES_KEY, mode)

    async def post(self, xml: str, openid: str = "", **kw) -> httpx.Response:
        params, body = self.side.request(xml, openid=openid, **kw)
        return await self.client.post("/wechat", params=params, content=body,
                                      headers={"Content-Type": "text/xml"})

    async def deliver(self, xml: str, openid: str = "") -> dict:
        res = await self.post(xml, openid)
        assert res.status_code == 200, res.text
        return self.side.read_reply(res.content)

    async def say(self, openid: str, content: str) -> str:
        reply = await self.deliver(text_xml(openid, content), openid)
        return reply.get("Content", "")

    async def click(self, openid: str, key: str) -> str:
        reply = await self.deliver(event_xml(openid, "CLICK", key), openid)
        return reply.get("Content", "")

    async def event(self, openid: str, event: str, key: str | None = None, **extra) -> dict:
        return await self.deliver(event_xml(openid, event, key, **extra), openid)

    async def send(self, openid: str, msg_type: str, **fields) -> dict:
        return await self.deliver(message_xml(openid, msg_type, **fields), openid)


@pytest.fixture
def app(request, settings):
    """The production app. Tests of the engine itself, marked `survey`, get the production
    router with a small example flow and test handlers put on a few booking keys."""
    from tests.support.survey import survey_router

    survey = request.node.get_closest_marker("survey") is not None
    application = create_app(settings, router=survey_router() if survey else None)
    yield application
    application.state.pipeline.close()


@pytest.fixture
def services(app):
    return app.state.services


@pytest.fixture
def pipeline(app):
    return app.state.pipeline


@pytest.fixture
async def http(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot.test") as client:
        yield client


@pytest.fixture(params=["plain", "compatible", "safe"])
def mode(request):
    return request.param


@pytest.fixture
def wx(http, mode):
    return WeChat(http, mode)


@pytest.fixture
def wx_plain(http):
    return WeChat(http, "plain")
