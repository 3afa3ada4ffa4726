"""A missing or invalid setting stops start-up with one line that names it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.infra.config import SettingsError, load_settings
from tests.support import ROOT

GOOD = dict(wechat_app_id="wx1", wechat_app_secret="s", wechat_token="tok",
            secret_key="cli-secret-key-0123456789")


@pytest.mark.parametrize("override,name", [
    ({"wechat_token": None}, "WECHAT_TOKEN"),
    ({"wechat_encoding_aes_key": "short"}, "WECHAT_ENCODING_AES_KEY"),
    ({"database_url": "mysql://x"}, "DATABASE_URL"),
    ({"timezone": "Mars/Olympus"}, "TIMEZONE"),
    ({"human_service_hours": "21:00-09:00"}, "HUMAN_SERVICE_HOURS"),
    ({"dedup_ttl_seconds": 5}, "DEDUP_TTL_SECONDS"),
    ({"sms_provider": "pigeon"}, "SMS_PROVIDER"),
    ({"wechat_api_base_url": "ftp://x"}, "WECHAT_API_BASE_URL"),
])
def test_bad_setting_is_named(override, name):
    values = {**GOOD, **override}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None, **values)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_api_base_url_both_spellings():
    for url in ("https://api.weixin.qq.com", "https://api.weixin.qq.com/cgi-bin/"):
        s = load_settings(_env_file=None, **GOOD, wechat_api_base_url=url)
        assert s.api_base_url == "https://api.weixin.qq.com/cgi-bin/"


def test_cli_refuses_to_start_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WECHAT_", "DATABASE_URL", "REDIS_URL"))}
    env.update(WECHAT_APP_ID="wx1", WECHAT_APP_SECRET="s", WECHAT_TOKEN="")  # beats any .env
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "db", "upgrade"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "WECHAT_TOKEN" in res.stderr


def test_cli_help_lists_the_doors():
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    for command in ("serve", "db", "demo", "chat", "import", "tiers", "staff", "bind", "unbind"):
        assert command in res.stdout


def test_bad_rules_file_stops_start_up_with_one_line(tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text('[[tiers]]\ncode = "diamond"\n', encoding="utf-8")
    env = {**os.environ, "WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET": "s",
           "WECHAT_TOKEN": "tok", "SECRET_KEY": "cli-secret-key-0123456789",
           "RULES_FILE": str(bad)}
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "serve", "--port", "1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "rules.toml" in res.stderr
