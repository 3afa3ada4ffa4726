"""The AppSecret and access tokens never reach a log, at any level, from any logger: all log
output (DEBUG, urllib3 included) is captured while calls to the WeChat double fail."""
from __future__ import annotations

import io
import logging

import pytest

from bot.domain.rules import load_rules
from bot.infra.services import Services
from tests.conftest import APP_SECRET

WRONG_SECRET = "wrong-secret-4242"


@pytest.fixture
def all_logs():
    """Everything logged, at DEBUG, by every logger, as a handler would write it."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_no_secret_and_no_token_in_any_log_line(settings, double, all_logs):
    rules = load_rules(settings.rules_file)
    good = Services(settings, rules)
    bad = Services(settings.model_copy(update={"wechat_app_secret": WRONG_SECRET,
                                               "wechat_app_id": "wxOtherApp0000001"}), rules)
    try:
        # A token is fetched, then WeChat refuses every call (40001): the token travels in
        # every URL, which urllib3 logs at DEBUG.
        good.wechat.message.send_text("oUser1", "hello")
        double.state.reject_all = True
        good.send_text("oUser1", "refused").result(30)
        double.state.reject_all = False
        # WeChat refuses the AppSecret.
        bad.send_text("oUser1", "never").result(30)
        # WeChat cannot be reached while the client holds a token: the exception's text
        # quotes the URL with its access_token.
        good.wechat.API_BASE_URL = "http://127.0.0.1:1/cgi-bin/"
        good.send_text("oUser1", "unreachable").result(30)
    finally:
        good.close()
        bad.close()

    out = all_logs.getvalue()
    assert "urllib3" in out and "DEBUG" in out  # the DEBUG lines were captured
    assert "access_token=" in out and "customer-service message" in out  # and the failures
    assert double.state.issued, "no token was issued"
    for secret in (APP_SECRET, WRONG_SECRET, *double.state.issued):
        assert secret not in out, f"{secret[:4]}… reached the log"
