"""An import killed between its commit and its tier run (as kill -9 would: the test's
`crashing_cli` patches the seam, `_import_rows`, in the child process to die right after it
returns) leaves its customers flagged; the next import, or the daily job, evaluates them,
so tiers always converge."""
from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from models import Customer
from tests.test_importer import HOLDER, policy, to_csv

ROOT = Path(__file__).resolve().parent.parent
CRASH_EXIT_CODE = 86

# The CLI in a child process whose import dies (os._exit: no cleanup, as kill -9) as soon
# as `_import_rows` has committed, before the tier run.
CRASH_AFTER_COMMIT = f"""
import os, sys
import bot.domain.importer as importer

committed = importer._import_rows

def crash_after_commit(*args, **kwargs):
    committed(*args, **kwargs)
    os._exit({CRASH_EXIT_CODE})

importer._import_rows = crash_after_commit
sys.argv = ["main.py", *sys.argv[1:]]
from bot.cli import main
main()
"""


def cli(db_url: str, *args: str, crash: bool = False) -> subprocess.CompletedProcess:
    base = dict(os.environ)
    base.update(DATABASE_URL=db_url, REDIS_URL="", WECHAT_APP_ID="wx1",
                WECHAT_APP_SECRET="s", WECHAT_TOKEN="tok",
                SECRET_KEY="cli-secret-key-0123456789")
    program = ["-c", CRASH_AFTER_COMMIT] if crash else [str(ROOT / "main.py")]
    return subprocess.run([sys.executable, *program, *args], env=base, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def holder(engine):
    with engine.connect() as conn:
        return conn.execute(select(Customer.__table__)
                            .where(Customer.__table__.c.id_number == HOLDER)).one()


@pytest.mark.parametrize("then", ["next import", "daily job"])
def test_a_crash_after_the_commit_converges(db_url, engine, tmp_path, then):
    path = tmp_path / "policies.csv"
    path.write_text(to_csv([policy("P1")]), encoding="utf-8")

    crashed = cli(db_url, "import", "policies", str(path), crash=True)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    stale = holder(engine)  # the policies are in, the tier run never happened
    assert (stale.tier, stale.evaluated_on, stale.needs_recompute) == ("mass", None, True)

    if then == "next import":
        res = cli(db_url, "import", "policies", str(path))  # the same file: nothing changes
        assert res.returncode == 0, res.stderr
        assert "unchanged  1" in res.stdout
        assert "1 upgraded" in res.stdout and "left unevaluated" in res.stdout
    else:
        res = cli(db_url, "jobs", "run", "tiers")
        assert res.returncode == 0, res.stderr
    fixed = holder(engine)
    assert (fixed.tier, fixed.contribution, fixed.needs_recompute) == (
        "pearl", Decimal("35000.00"), False)
    assert fixed.evaluated_on is not None


def test_an_import_without_a_crash_leaves_no_flag(db_url, engine, tmp_path):
    path = tmp_path / "policies.csv"
    path.write_text(to_csv([policy("P1")]), encoding="utf-8")
    res = cli(db_url, "import", "policies", str(path))
    assert res.returncode == 0, res.stderr
    assert "left unevaluated" not in res.stdout
    row = holder(engine)
    assert (row.tier, row.needs_recompute) == ("pearl", False)
