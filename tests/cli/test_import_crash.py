"""An import killed between its commit and its tier run (as kill -9 would: the test's
child process patches a seam, `_import_policies` or `batch_committed`, to die right after
it returns) leaves its customers flagged; the next import, or the daily job, evaluates them,
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
from tests.support.imports import HOLDER, policy, to_csv
from tests.support import ROOT

CRASH_EXIT_CODE = 86

# The CLI in a child process whose import dies (os._exit: no cleanup, as kill -9) as soon
# as the seam `{seam}` of the importer has returned: `_import_policies` after its commit,
# before the tier run; `batch_committed` after the first SQLite batch.
CRASH_AFTER = """
import os, sys
import bot.domain.importer as importer

committed = importer.{seam}

def crash_after(*args, **kwargs):
    committed(*args, **kwargs)
    os._exit({code})

importer.{seam} = crash_after
sys.argv = ["main.py", *sys.argv[1:]]
from bot.cli import main
main()
"""


def cli(db_url: str, *args: str, crash: str = "") -> subprocess.CompletedProcess:
    base = dict(os.environ)
    base.update(DATABASE_URL=db_url, REDIS_URL="", WECHAT_APP_ID="wx1",
                WECHAT_APP_SECRET="s", WECHAT_TOKEN="tok",
                SECRET_KEY="cli-secret-key-0123456789")
    program = (["-c", CRASH_AFTER.format(seam=crash, code=CRASH_EXIT_CODE)] if crash
               else [str(ROOT / "main.py")])
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

    crashed = cli(db_url, "import", "policies", str(path), crash="_import_policies")
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


def test_a_crash_between_two_sqlite_batches_converges_on_the_same_file(tmp_path):
    """SQLite writes a policy file in batches of BATCH_ROWS (2,000) rows, each its own
    transaction: killed after the first, the import leaves that batch written and its
    customer flagged; the same file again writes the rest and evaluates the tier."""
    from sqlalchemy import create_engine, func

    from bot.domain.importer import BATCH_ROWS
    from models import Policy

    url = f"sqlite:///{tmp_path / 'batches.db'}"
    assert cli(url, "db", "upgrade").returncode == 0
    path = tmp_path / "policies.csv"
    rows = [policy(f"P{i:05d}", annualized_basic_premium="10") for i in range(BATCH_ROWS + 500)]
    path.write_text(to_csv(rows), encoding="utf-8")
    engine = create_engine(url)

    def policies() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Policy.__table__)).scalar()

    crashed = cli(url, "import", "policies", str(path), crash="batch_committed")
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    assert policies() == BATCH_ROWS
    stale = holder(engine)
    assert (stale.tier, stale.needs_recompute) == ("mass", True)

    again = cli(url, "import", "policies", str(path))
    assert again.returncode == 0, again.stderr
    assert "inserted   500" in again.stdout and f"unchanged  {BATCH_ROWS}" in again.stdout
    assert policies() == BATCH_ROWS + 500
    fixed = holder(engine)  # 2,500 policies of 10 CNY: 25,000, still 大众 but evaluated
    assert (fixed.contribution, fixed.needs_recompute) == (Decimal("25000.00"), False)
    engine.dispose()
