"""Structured logs: LOG_FORMAT=json writes one JSON object a line, time-stamped in ISO 8601
with the offset, and every line of one message's handling carries its MsgId and the
request's id, whichever thread logs it."""
from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.app import log_handler
from bot.infra.config import SettingsError
from bot.wechat.simulator import text_xml
from tests.conftest import _settings
from tests.support import ROOT

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00")
ERROR = "系统开了个小差"  # bot/templates/error.j2


@pytest.fixture
def json_lines(settings):
    """What the root logger writes as JSON lines during the test (as configure_logging sets
    it up with LOG_FORMAT=json)."""
    stream = io.StringIO()
    handler = log_handler(settings.tz, "json", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines() -> list[dict]:
        handler.flush()
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_a_failed_message_logs_its_ids_on_every_line(settings, http, wx_plain, json_lines,
                                                           db_url):
    """The database loses a table under a message: the customer gets the apology, and the
    lines logged about it (in the pipeline's thread) carry its MsgId and its request id."""
    user = "oLogsFailed00001"
    assert await wx_plain.say("oLogsWarmUp00001", "帮助")  # the app is up
    eng = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.begin() as c:
        c.execute(text("ALTER TABLE wechat_user RENAME TO wechat_user_away"))
    try:
        failed = await wx_plain.deliver(text_xml(user, "帮助", msg_id=55500011), user)
    finally:
        with eng.begin() as c:
            c.execute(text("ALTER TABLE wechat_user_away RENAME TO wechat_user"))
        eng.dispose()
    assert ERROR in failed["Content"]
    ok = await wx_plain.deliver(text_xml(user, "帮助", msg_id=55500012), user)
    assert ERROR not in ok["Content"]
    bad = await http.post("/wechat", params={"signature": "0" * 40, "nonce": "n2",
                                             "timestamp": str(int(time.time()))}, content=b"<xml/>")
    assert bad.status_code == 403

    lines = json_lines()
    assert lines and all(ISO.fullmatch(line["time"]) for line in lines)
    mine = [line for line in lines if line.get("msg_id") == "55500011"]
    assert mine, lines
    assert any(line["level"] == "ERROR" and "wechat_user" in line.get("exc", "")
               for line in mine)
    assert len({line.get("request_id") for line in mine}) == 1
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["request_id"]) for line in mine)
    # No line of another message or request carries this one's ids.
    rid = mine[0]["request_id"]
    assert all(line.get("msg_id") == "55500011" for line in lines
               if line.get("request_id") == rid)
    refused = [line for line in lines if "bad signature" in line["message"]]
    assert len(refused) == 1
    assert refused[0]["request_id"] not in (None, rid) and "msg_id" not in refused[0]


def test_log_format_json_end_to_end(tmp_path):
    """configure_logging with LOG_FORMAT=json, in a process of its own: a JSON object a
    line, the time in TIMEZONE with its offset, a traceback in `exc`."""
    code = ("import logging; from zoneinfo import ZoneInfo; from bot.app import configure_logging;"
            "configure_logging('INFO', 'sekrit-value-123', tz=ZoneInfo('Asia/Shanghai'), fmt='json');"
            "log = logging.getLogger('bot.x'); log.warning('hello %s', 'sekrit-value-123');"
            "\ntry:\n    1/0\nexcept ZeroDivisionError:\n    log.exception('boom')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    lines = [json.loads(line) for line in res.stderr.splitlines()]
    assert [line["message"] for line in lines] == ["hello ***", "boom"]
    assert all(ISO.fullmatch(line["time"]) and line["logger"] == "bot.x" for line in lines)
    assert "ZeroDivisionError" in lines[1]["exc"] and "exc" not in lines[0]
    assert "request_id" not in lines[0]  # no message being handled


@pytest.mark.parametrize("value,ok", [("json", True), ("TEXT", True), ("xml", False), ("", False)])
def test_log_format_setting(value, ok):
    if ok:
        assert _settings("sqlite:///x.db", log_format=value).log_format == value.lower()
    else:
        with pytest.raises(SettingsError, match="LOG_FORMAT"):
            _settings("sqlite:///x.db", log_format=value)
