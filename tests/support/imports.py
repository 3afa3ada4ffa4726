"""Shared set-ups (fixtures, constants and helpers) first written for tests/cli/test_importer.py."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.domain.identity import make_id_number
from bot.domain.importer import import_csv
from bot.infra.config import Settings
from tests.conftest import _settings
from tests.support import ROOT


HOLDER = make_id_number("110105", date(1980, 5, 17), 3, "M")
HOLDER2 = make_id_number("310101", date(1975, 1, 2), 7, "F")


PHONE = "13812345678"


def policy(no: str = "P0001", **cells: str) -> dict[str, str]:
    row = dict(policy_no=no, holder_id_number=HOLDER, holder_name="张三丰", holder_phone=PHONE,
               product_name="安心人生两全保险", liabilities="critical_illness;hospitalization",
               payment_mode="regular", annualized_basic_premium="35000.00", single_premium="0",
               annual_regular_topup="0", initial_lump_sum_topup="", irregular_topup="0",
               effective_date="2024-01-01", payment_years="10", status="in_force",
               cooling_off_end_date="2024-01-16", pledged="0", policy_loan="0")
    row.update(cells)
    return row


def to_csv(rows: list[dict[str, str]], header: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header or list(rows[0]), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def db(engine):
    return engine


def count(db, model) -> int:
    with db.connect() as c:
        return c.execute(select(func.count()).select_from(model.__table__)).scalar_one()


def cli_env(db_url: str) -> dict[str, str]:
    """Every setting given explicitly: the CLI works in the repository, where a developer's
    .env would otherwise fill in whatever the environment leaves out."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    for name, info in Settings.model_fields.items():
        if isinstance(info.default, (str, int, float, bool, Path)):
            env[name.upper()] = str(info.default)
    env.update(DATABASE_URL=db_url, WECHAT_APP_ID="wx1", WECHAT_APP_SECRET="s",
               WECHAT_TOKEN="tok", SECRET_KEY="cli-secret-key-0123456789", REDIS_URL="", RULES_FILE=str(ROOT / "rules.toml"))
    return env


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", "import", *args], cwd=ROOT,
                          env=cli_env(db_url), capture_output=True, text=True, timeout=120)


@pytest.fixture
def cfg(db_url):
    return _settings(db_url)


@pytest.fixture
def run(cfg, tmp_path):
    """Import `content` (text is written as UTF-8) as a file of `kind`."""
    def run_(kind: str, content: str | bytes, *, skip_bad: bool = False, name: str = "in.csv"):
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return import_csv(cfg, kind, path, skip_bad=skip_bad, progress=False)
    return run_


def rows_of(db, model) -> list:
    with db.connect() as c:
        return c.execute(select(model.__table__)).all()


def lines_of(report) -> dict[int, str]:
    return {r.line: r.reason for r in report.rejections}
