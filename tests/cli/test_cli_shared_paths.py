"""The CLI, the `#` commands and the chat share one domain path (issue 18, section 5): a
staff account is made the same way by `staff add` and by `#注册`, and a left message from
the chat is closed from the CLI as the console closes it, audited. Section 3: a follow from a
product scan, typed by wechatpy's own parser, is welcomed, and WeChat's retry of it is the
same reply."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

import time_machine

from bot.infra.texts import render
from bot.wechat.simulator import event_xml
from tests.conftest import SECRET_KEY
from tests.support import ROOT
from tests.support.imports import cli_env

ADDED = "oCliStaffAdded0000000000001"
INVITED = "oCliStaffInvited00000000002"
CUSTOMER = "oCliLeaver0000000000000003"


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**cli_env(db_url), "SECRET_KEY": SECRET_KEY}  # the server's: invitation codes
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def staff_rows(db_url: str) -> dict[str, list[str]]:
    listed = cli(db_url, "staff", "list")
    assert listed.returncode == 0, listed.stderr
    return {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}


async def test_staff_add_and_registration_by_code_make_logins_by_one_rule(wx_plain, db_url):
    # README: "the console login defaults to the name, lower case without spaces"; a second
    # member of the same name gets the next free one, whichever way the account was made.
    added = cli(db_url, "staff", "add", ADDED, "--name", "Li Lei", "--role", "admin")
    assert added.returncode == 0 and "console login lilei" in added.stdout, added.stderr
    invited = cli(db_url, "staff", "invite", "--name", "Li Lei", "--role", "specialist")
    assert invited.returncode == 0, invited.stderr
    code = re.search(r"#注册 ([A-Z2-9]{10})", invited.stdout)[1]
    assert "登记成功" in await wx_plain.say(INVITED, f"#注册 {code}")
    rows = staff_rows(db_url)
    assert rows[ADDED][1:4] == ["admin", "Li Lei", "lilei"]
    assert rows[INVITED][1:4] == ["specialist", "Li Lei", "lilei2"]


async def test_a_message_left_in_chat_is_closed_from_the_cli_and_audited(wx_plain, db_url):
    with time_machine.travel("2026-11-25 23:30:00+08:00", tick=True):  # outside service hours
        assert "95359" in await wx_plain.say(CUSTOMER, "人工")
        assert await wx_plain.say(CUSTOMER, "请明天给我回电话") == render("modes/message_received")
    listed = cli(db_url, "messages", "list", "--open")
    line = next(x for x in listed.stdout.splitlines() if CUSTOMER in x)
    assert "请明天给我回电话" in line and "\topen\t" in line
    number = line.split("\t")[0].lstrip("#")
    closed = cli(db_url, "messages", "close", number, "--by", "o_staff_wang")
    assert closed.returncode == 0 and f"message #{number} closed" in closed.stdout
    again = cli(db_url, "messages", "close", number, "--by", "o_someone_else")
    assert again.returncode == 0 and "already closed" in again.stdout
    assert "by o_staff_wang" in cli(db_url, "messages", "list").stdout  # the first close kept
    audit = [x.split("\t") for x in cli(db_url, "audit", "list").stdout.splitlines()]
    assert [(a[3], a[4]) for a in audit if a[3] == "message_closed"] == \
        [("message_closed", f"message:{number}")]  # once: the second close changed nothing


async def test_a_product_scan_follow_and_its_retry_get_one_welcome(wx_plain, caplog):
    xml = event_xml(CUSTOMER, "subscribe", "scanimage|", create_time=int(time.time()))
    with caplog.at_level(logging.INFO):
        first = await wx_plain.deliver(xml, CUSTOMER)
        retry = await wx_plain.deliver(xml, CUSTOMER)  # WeChat's retry: the same event
    assert "欢迎关注" in first["Content"]
    assert retry == first
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_audit_list_shows_every_instant_in_shanghai_time(wx_plain, db_url):
    """DOMAIN: times are shown in Asia/Shanghai everywhere a person reads them (CLI too)."""
    import json

    with time_machine.travel("2026-11-25 23:30:00+08:00", tick=True):  # outside service hours
        await wx_plain.say(CUSTOMER, "人工")
        await wx_plain.say(CUSTOMER, "请明天给我回电话")
    listed = cli(db_url, "messages", "list", "--open")
    number = next(x for x in listed.stdout.splitlines() if CUSTOMER in x).split("\t")[0].lstrip("#")
    assert cli(db_url, "messages", "close", number, "--by", "o_staff_wang").returncode == 0
    line = next(x for x in cli(db_url, "audit", "list").stdout.splitlines()
                if "\tmessage_closed\t" in x)
    before, after = (json.loads(part.split("=", 1)[1]) for part in line.split("\t")[5:7])
    instants = [v for record in (before, after) for v in record.values()
                if isinstance(v, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT.*", v)]
    assert instants and all(v.endswith("+08:00") for v in instants), line
    assert before["created_at"].startswith("2026-11-25T23:30"), before  # the wall clock in Shanghai
