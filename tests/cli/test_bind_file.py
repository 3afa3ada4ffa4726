"""Bulk binding: `python main.py bind --file FILE.csv [--skip-bad]` through the real CLI, with
the imports' bad-row rules, line numbers and exit codes, and the binding rules of
`bot.domain.accounts` (the single `bind OPENID ID_NUMBER` keeps working)."""
from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest
from sqlmodel import Session, select

from bot.domain.identity import make_id_number
from models import WechatUser
from tests.support import factories
from tests.support import ROOT
from tests.support.imports import cli_env

UNKNOWN = make_id_number("440305", date(1990, 2, 3), 9, "F")


def bind(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", "bind", *args], cwd=ROOT,
                          env=cli_env(db_url), capture_output=True, text=True, timeout=120)


@pytest.fixture
def people(engine):
    """Three customers: (id, id_number) each."""
    with Session(engine) as s:
        cs = [factories.customer(s, name=f"客户{i}", birth=date(1970 + i, 1, 2)) for i in range(3)]
        s.commit()
        return [(c.id, c.id_number) for c in cs]


def bindings(engine) -> dict[str, int | None]:
    with Session(engine) as s:
        return {u.openid: u.customer_id for u in s.exec(select(WechatUser)).all()}


def csv_file(tmp_path, *rows: str, header: str = "openid,id_number") -> str:
    path = tmp_path / "bind.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def test_a_good_file_binds_every_row_and_exits_0(db_url, engine, people, tmp_path):
    (a, na), (b, nb), _ = people
    with Session(engine) as s:  # a follower the bot already knows, not bound yet
        s.add(WechatUser(openid="o_known", following=True, bind_failures=2))
        s.commit()
    path = csv_file(tmp_path, f"o_new,{na}", f"o_known,{nb.lower()}")
    res = bind(db_url, "--file", path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bound      2" in res.stdout and "rejected   0" in res.stdout
    assert na not in res.stdout and nb not in res.stdout
    assert bindings(engine) == {"o_new": a, "o_known": b}
    with Session(engine) as s:
        known = s.get(WechatUser, "o_known")
        assert known.bound_at is not None and known.bind_failures == 0

    res = bind(db_url, "--file", path)  # again: nothing changes
    assert res.returncode == 0 and "unchanged  2" in res.stdout and "bound      0" in res.stdout


def test_every_refusal_names_its_line_and_nothing_is_written(db_url, engine, people, tmp_path):
    (a, na), (b, nb), (c, nc) = people
    assert bind(db_url, "o_a", na).returncode == 0  # a is bound to o_a
    assert bind(db_url, "o_b", nb).returncode == 0  # o_b is bound to b
    bad_check = nc[:17] + ("0" if nc[17] != "0" else "1")
    path = csv_file(
        tmp_path,
        f"o_c,{nc}",          # 2: good
        f"o_other,{na}",      # 3: a is bound to another openid
        f"o_b,{nc}",          # 4: id_number repeats line 2; o_b is bound to b
        f"o_x,{UNKNOWN}",     # 5: no such customer
        f"o_y,{bad_check}",   # 6: bad check digit
        "",                   # 7: blank lines are skipped but counted
        f"o_c,{nb}",          # 8: openid repeats line 2
        f"o bad,{nb}",        # 9: not an openid
        f"o_z,{nc},extra",    # 10: wrong number of cells
    )
    res = bind(db_url, "--file", path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    out = res.stdout
    assert "line 2:" not in out
    assert "line 3: id_number: the customer (" in out and "is bound to another openid" in out
    assert "line 4: id_number repeats line 2" in out
    assert "line 5: id_number: no customer has this ID number" in out
    assert "line 6: id_number: bad check digit" in out
    assert "line 8: openid repeats line 2" in out
    assert "line 9: id_number repeats line 8; openid: must be 1-64 letters" in out
    assert "line 10: expected 2 cells as in the header, found 3" in out
    assert "Nothing was written" in out and "--skip-bad to bind the 1 row that are good" in out
    assert not any(n in out for n in (na, nb, nc, UNKNOWN, bad_check))
    assert bindings(engine) == {"o_a": a, "o_b": b}

    res = bind(db_url, "--file", path, "--skip-bad")
    assert res.returncode == 1 and "bound      1" in res.stdout
    assert bindings(engine) == {"o_a": a, "o_b": b, "o_c": c}


def test_an_openid_bound_to_another_customer_is_refused(db_url, engine, people, tmp_path):
    (a, na), (b, nb), _ = people
    assert bind(db_url, "o_a", na).returncode == 0
    res = bind(db_url, "--file", csv_file(tmp_path, f"o_a,{nb}"))
    assert res.returncode == 1
    assert "line 2: openid: bound to another customer; unbind it first" in res.stdout
    assert bindings(engine) == {"o_a": a}


@pytest.mark.parametrize("content,code,says", [
    (b"", 1, "the file is empty (0 bytes)"),
    (b"openid,id_number\n", 0, "0 rows read"),
    (b"openid\no_1\n", 1, "line 1: missing column(s) in the header: id_number"),
    ("openid,id_number\no_1,甲".encode("gbk"), 1, "line 2: the file is not UTF-8"),
], ids=["empty", "header-only", "missing-column", "gbk"])
def test_file_level_outcomes(db_url, engine, tmp_path, content, code, says):
    path = tmp_path / "bind.csv"
    path.write_bytes(content)
    res = bind(db_url, "--file", str(path))
    assert res.returncode == code, res.stdout + res.stderr
    assert says in res.stdout and "Traceback" not in res.stderr
    assert bindings(engine) == {}


def test_column_order_bom_and_missing_file(db_url, engine, people, tmp_path):
    (a, na), _, _ = people
    path = tmp_path / "bind.csv"
    path.write_bytes(b"\xef\xbb\xbfID_Number,note,OpenID\r\n" + f"{na},x,o_a\r\n".encode())
    res = bind(db_url, "--file", str(path))
    assert res.returncode == 0, res.stdout
    assert "ignored columns: note" in res.stdout
    assert bindings(engine) == {"o_a": a}
    res = bind(db_url, "--file", str(tmp_path / "nope.csv"))
    assert res.returncode == 1 and "cannot read the file" in res.stdout


def test_arguments_and_file_are_exclusive(db_url, people, tmp_path):
    _, (b, nb), _ = people
    path = csv_file(tmp_path)
    assert bind(db_url, "o_a", nb, "--file", path).returncode == 2
    assert bind(db_url, "o_a").returncode == 2
