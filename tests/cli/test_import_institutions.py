"""`python main.py import institutions FILE [--skip-bad]` and `calendar check` through the
real CLI (a subprocess), with the policy import's bad-row rules and exit codes."""
from __future__ import annotations

import subprocess
import sys

from sqlmodel import Session, select

from models import Institution
from tests.support import ROOT
from tests.support.imports import cli, cli_env, count

HEADER = "code,name,city,address,kind,services,phone,closed\n"
GOOD = [
    "BJ1,北京洁牙门诊,北京,北京某路1号,commercial,dental,010-12345678,sun;2026-12-25\n",
    "SH1,上海华山医院,上海,上海某路2号,tertiary_hospital,checkup;special_exam;expert_outpatient,"
    "021-52889999,\n",
]


def test_good_file_imports_with_closed_days(db_url, engine, tmp_path):
    path = tmp_path / "inst.csv"
    path.write_text(HEADER + "".join(GOOD), encoding="utf-8")
    res = cli(db_url, "institutions", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "inserted   2" in res.stdout
    with Session(engine) as s:
        bj, sh = s.exec(select(Institution).order_by(Institution.code)).all()
    assert (bj.closed_weekdays, bj.closed_dates) == ("sun", "2026-12-25")
    assert sh.services == "checkup;expert_outpatient;special_exam" and sh.closed_weekdays == ""
    res = cli(db_url, "institutions", str(path))  # again: nothing changes
    assert res.returncode == 0 and "unchanged  2" in res.stdout


def test_the_closed_column_is_optional(db_url, engine, tmp_path):
    path = tmp_path / "inst.csv"
    path.write_text("code,name,city,address,kind,services,phone\n"
                    "GZ1,广州口腔,广州,广州某路3号,commercial,dental,020-38888888\n", encoding="utf-8")
    res = cli(db_url, "institutions", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert count(engine, Institution) == 1


def test_bad_rows_exit_1_name_their_lines_and_write_nothing_unless_skip_bad(db_url, engine,
                                                                            tmp_path):
    path = tmp_path / "inst.csv"
    path.write_text(HEADER + GOOD[0]
                    + "X2,某医院,北京,某路,hospital,dental,010-1234567,\n"  # line 3: kind
                    + "X3,某诊所,北京,某路,commercial,massage,010-1234567,\n"  # line 4: service
                    + "X4,某诊所,北京,某路,commercial,dental,010-1234567,someday\n"  # line 5
                    + "BJ1,重复,北京,某路,commercial,dental,010-1234567,\n",  # line 6: code twice
                    encoding="utf-8")
    res = cli(db_url, "institutions", str(path))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "line 3: kind: unknown kind 'hospital'" in res.stdout
    assert "line 4: services: unknown service 'massage'" in res.stdout
    assert "line 5: closed:" in res.stdout
    assert "line 6: code repeats line 2" in res.stdout
    assert count(engine, Institution) == 0
    res = cli(db_url, "institutions", str(path), "--skip-bad")
    assert res.returncode == 1 and "inserted   1" in res.stdout
    assert count(engine, Institution) == 1


def test_empty_file_is_an_error_and_header_only_imports_nothing(db_url, engine, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    res = cli(db_url, "institutions", str(empty))
    assert res.returncode == 1 and "the file is empty (0 bytes)" in res.stdout
    header = tmp_path / "header.csv"
    header.write_text(HEADER, encoding="utf-8")
    res = cli(db_url, "institutions", str(header))
    assert res.returncode == 0 and "0 rows read" in res.stdout
    missing = tmp_path / "missing.csv"
    missing.write_text("code,name,city,address,kind,services\n", encoding="utf-8")
    res = cli(db_url, "institutions", str(missing))
    assert res.returncode == 1 and "line 1: missing column(s) in the header: phone" in res.stdout
    assert count(engine, Institution) == 0


def test_calendar_check(db_url):
    def run(*years: str):
        return subprocess.run([sys.executable, "main.py", "calendar", "check", *years], cwd=ROOT,
                              env=cli_env(db_url), capture_output=True, text=True, timeout=60)
    known = run("2026")
    assert known.returncode == 0 and "2026" in known.stdout
    provisional = run("2026", "2099")
    assert provisional.returncode == 1 and "PROVISIONAL" in provisional.stdout
