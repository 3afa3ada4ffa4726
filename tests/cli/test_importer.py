"""CSV imports: `python main.py import policies|family FILE [--skip-bad]` through the real CLI,
and `import_csv` directly for the many ways a file can be wrong."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from bot.domain import importer
from bot.infra.config import Settings
from bot.domain.identity import make_id_number, mask_id_number, mask_phone
from bot.domain.importer import POLICY_COLUMNS, import_csv
from models import Customer, FamilyMember, Policy, TierHistory
from tests.conftest import _settings
from tests.support.imports import (HOLDER, HOLDER2, cfg, cli, count, db, lines_of, policy,  # noqa: F401
                                   rows_of, run, to_csv)


SPOUSE = make_id_number("310101", date(1982, 3, 4), 1, "F")
CHILD = make_id_number("310101", date(2010, 6, 1), 2, "M")
BAD_CHECK = HOLDER[:17] + ("0" if HOLDER[17] != "0" else "1")


def member(id_number: str = SPOUSE, **cells: str) -> dict[str, str]:
    row = dict(holder_id_number=HOLDER, relation="spouse", name="李四", id_number=id_number,
               phone="13900001111")
    row.update(cells)
    return row


# --- A good file ------------------------------------------------------------------------------


def test_good_file_creates_customers_and_policies(run, db):
    report = run("policies", to_csv([
        policy("P0001"),
        policy("P0002", holder_id_number=HOLDER2, holder_name="王五", holder_phone="13900002222",
               payment_mode="single", annualized_basic_premium="0", single_premium="120000.5",
               liabilities="", payment_years="1"),
        policy("P0003", pledged="1", status="LAPSED", liabilities="disability; mild_illness"),
    ]))
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (3, 3, 0, 0)
    assert report.rejected == 0
    assert (report.customers_inserted, report.customers_updated) == (2, 0)
    assert report.written

    customers = {c.id_number: c for c in rows_of(db, Customer)}
    assert customers[HOLDER].sex == "M" and customers[HOLDER].birth_date == date(1980, 5, 17)
    assert customers[HOLDER2].sex == "F" and customers[HOLDER2].name == "王五"
    policies = {p.policy_no: p for p in rows_of(db, Policy)}
    p1, p2, p3 = policies["P0001"], policies["P0002"], policies["P0003"]
    assert p1.customer_id == customers[HOLDER].id and p2.customer_id == customers[HOLDER2].id
    assert p1.annualized_basic_premium == Decimal("35000.00")
    assert p1.initial_lump_sum_topup == Decimal("0")
    assert p2.single_premium == Decimal("120000.50") and p2.payment_mode == "single"
    assert p1.liabilities == "hospitalization;critical_illness"  # canonical order
    assert p2.liabilities == ""
    assert p3.liabilities == "mild_illness;disability" and p3.status == "lapsed"
    assert p3.pledged is True and p1.pledged is False and p1.policy_loan is False
    assert p1.effective_date == date(2024, 1, 1) and p1.cooling_off_end_date == date(2024, 1, 16)
    assert p1.payment_years == 10


def test_bom_crlf_column_order_and_extra_columns(run, db):
    header = ["remark"] + list(reversed(POLICY_COLUMNS))
    text = to_csv([dict(policy("P0001"), remark="x"), dict(policy("P0002"), remark="y")], header)
    report = run("policies", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert (report.inserted, report.rejected) == (2, 0)
    assert report.ignored_columns == ["remark"]
    assert "ignored columns: remark" in report.render()
    assert count(db, Policy) == 2


def test_reimport_changes_nothing(run, db):
    content = to_csv([policy("P0001"), policy("P0002"), policy("P0003", holder_id_number=HOLDER2)])
    run("policies", content)
    before = (rows_of(db, Customer), rows_of(db, Policy))
    report = run("policies", content)
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (0, 0, 3, 0)
    assert (report.customers_inserted, report.customers_updated) == (0, 0)
    assert "tier changes: none" in report.render()
    assert (rows_of(db, Customer), rows_of(db, Policy)) == before


def test_changed_rows_are_updated(run, db):
    run("policies", to_csv([policy("P0001"), policy("P0002")]))
    report = run("policies", to_csv([
        policy("P0003"),
        policy("P0001", annualized_basic_premium="35000"),  # the same amount, written differently
        policy("P0002", status="surrendered", holder_phone="13700000000"),  # the holder's last row
    ]))
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 1)
    assert (report.customers_inserted, report.customers_updated) == (0, 1)
    policies = {p.policy_no: p for p in rows_of(db, Policy)}
    assert policies["P0002"].status == "surrendered"
    [customer] = rows_of(db, Customer)
    assert customer.phone == "13700000000"


def test_policy_moves_to_another_holder(run, db):
    run("policies", to_csv([policy("P0001")]))
    report = run("policies", to_csv([policy("P0001", holder_id_number=HOLDER2)]))
    assert (report.updated, report.customers_inserted) == (1, 1)
    ids = {c.id_number: c.id for c in rows_of(db, Customer)}
    [p] = rows_of(db, Policy)
    assert p.customer_id == ids[HOLDER2]
    assert report.affected_customers == {ids[HOLDER], ids[HOLDER2]}


def test_the_last_row_of_a_holder_gives_name_and_phone(run, db, monkeypatch):
    monkeypatch.setattr(importer, "BATCH_ROWS", 2)  # the holder's rows span two batches
    run("policies", to_csv([policy("P1"), policy("P2", holder_phone="13700000001"),
                            policy("P3", holder_name="张三", holder_phone="13700000002")]))
    [customer] = rows_of(db, Customer)
    assert (customer.name, customer.phone) == ("张三", "13700000002")


def test_lower_case_x_is_normalised(run, db):
    holder = make_id_number("110105", date(1949, 12, 31), 1, "F")
    assert holder.endswith("X")
    report = run("policies", to_csv([policy(holder_id_number=holder.lower())]))
    assert report.inserted == 1
    assert rows_of(db, Customer)[0].id_number == holder


def test_new_policies_upgrade_their_holders_at_once(run, db):
    with time_machine.travel("2025-03-17 10:00:00+08:00", tick=True):  # not a review day
        report = run("policies", to_csv([policy("P1"), policy("P2", holder_id_number=HOLDER2,
                                                               annualized_basic_premium="1000")]))
        assert "tier changes: 1 upgraded, 0 downgraded, 0 dropped (2 customers evaluated in" \
            in report.render()
        tiers = {c.id_number: (c.tier, c.contribution) for c in rows_of(db, Customer)}
        assert tiers == {HOLDER: ("pearl", Decimal("35000.00")),
                         HOLDER2: ("mass", Decimal("1000.00"))}

        report = run("policies", to_csv([policy("P3", annualized_basic_premium="65000")]))
        assert "tier changes: 1 upgraded, 0 downgraded, 0 dropped (1 customers evaluated in" \
            in report.render()
        assert [(h.from_tier, h.to_tier, h.reason) for h in rows_of(db, TierHistory)] == [
            ("mass", "pearl", "upgrade"), ("pearl", "gold", "upgrade")]

        # No downgrade before the review, even when a policy lapses; no change, no evaluation.
        report = run("policies", to_csv([policy("P3", annualized_basic_premium="65000",
                                                status="lapsed")]))
        assert "0 upgraded, 0 downgraded, 0 dropped (1 customers evaluated in" in report.render()
        report = run("policies", to_csv([policy("P3", annualized_basic_premium="65000",
                                                status="lapsed")]))
        assert "tier changes: none (no policy changed)" in report.render()
    assert {c.id_number: c.tier for c in rows_of(db, Customer)}[HOLDER] == "gold"


def test_a_failed_tier_run_keeps_the_import(run, db, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("database is locked"))
    monkeypatch.setattr(importer, "recompute", broken)
    report = run("policies", to_csv([policy()]))
    assert report.written and report.rejected == 0 and count(db, Policy) == 1
    assert "tier changes: not evaluated (OperationalError)" in report.render()
    assert "tiers recompute" in report.render()


def test_bad_rules_file_stops_the_import_before_anything_is_written(db_url, db, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("[[tiers]]\ncode = 1\n", encoding="utf-8")
    path = tmp_path / "p.csv"
    path.write_text(to_csv([policy()]), encoding="utf-8")
    report = import_csv(_settings(db_url, rules_file=rules), "policies", path, skip_bad=True,
                        progress=False)
    assert report.rejected and "rules.toml" in report.render()
    assert count(db, Policy) == 0


# --- Bad rows ------------------------------------------------------------------------------------

BAD_ROWS = [
    ({"holder_id_number": BAD_CHECK}, "holder_id_number: bad check digit"),
    ({"holder_id_number": HOLDER[:17]}, "holder_id_number: must be 18 characters"),
    ({"holder_id_number": HOLDER[:6] + "19800230" + HOLDER[14:]},
     "holder_id_number: bad birth date"),
    ({"holder_id_number": ""}, "holder_id_number: is empty"),
    ({"single_premium": "-100.00"}, "single_premium: negative amount"),
    ({"irregular_topup": "12.345"}, "irregular_topup: not an amount with at most 2 decimals"),
    ({"annualized_basic_premium": "1,000"}, "not an amount"),
    ({"annual_regular_topup": "１２"}, "not an amount"),  # full-width digits
    ({"status": "active"}, "status: unknown status 'active'"),
    ({"effective_date": "2024-02-30"}, "effective_date: not a date (YYYY-MM-DD): '2024-02-30'"),
    ({"cooling_off_end_date": "2024/01/16"}, "cooling_off_end_date: not a date"),
    ({"effective_date": ""}, "effective_date: not a date"),
    ({"payment_years": "0"}, "payment_years: must be a whole number of years"),
    ({"payment_years": "ten"}, "payment_years: must be a whole number"),
    ({"payment_mode": "monthly"}, "payment_mode: unknown payment mode"),
    ({"pledged": "yes"}, "pledged: must be 0 or 1"),
    ({"pledged": "可能"}, "pledged: must be 0 or 1"),
    ({"policy_loan": ""}, "policy_loan: must be 0 or 1"),
    ({"liabilities": "hospitalization;dental"}, "liabilities: unknown liability 'dental'"),
    ({"policy_no": ""}, "policy_no: must be 1-32 characters"),
    ({"policy_no": "P 1"}, "policy_no: must be 1-32 characters"),
    ({"holder_phone": "1381234567"}, "holder_phone: not a mainland mobile number"),
    ({"holder_name": ""}, "holder_name: is empty"),
    ({"product_name": "x" * 129}, "product_name: is longer than 128 characters"),
]


@pytest.mark.parametrize("cells,reason", BAD_ROWS, ids=[r for _, r in BAD_ROWS])
def test_bad_row_is_rejected_with_its_line(run, db, cells, reason):
    content = to_csv([policy("P0001"), policy("P0002", **cells), policy("P0003")])
    report = run("policies", content)
    assert report.rejected == 1 and not report.written
    assert reason in lines_of(report)[3]
    assert count(db, Policy) == count(db, Customer) == 0
    assert "Nothing was written" in report.render() and "--skip-bad" in report.render()

    report = run("policies", content, skip_bad=True)
    assert (report.inserted, report.rejected) == (2, 1) and report.written
    assert {p.policy_no for p in rows_of(db, Policy)} == {"P0001", "P0003"}


def test_every_bad_column_of_a_row_is_named(run):
    report = run("policies", to_csv([policy(status="x", pledged="2", single_premium="-1")]))
    reason = lines_of(report)[2]
    assert "status:" in reason and "pledged:" in reason and "single_premium: negative" in reason


def test_a_policy_number_twice_is_an_error_on_the_second(run, db):
    content = to_csv([policy("P0001"), policy("P0002"), policy("P0001", status="lapsed")])
    report = run("policies", content)
    assert lines_of(report) == {4: "policy_no repeats line 2"}
    assert count(db, Policy) == 0
    report = run("policies", content, skip_bad=True)
    assert (report.inserted, report.rejected) == (2, 1)
    assert {p.status for p in rows_of(db, Policy)} == {"in_force"}  # the first occurrence


def test_a_row_with_the_wrong_number_of_cells(run):
    content = to_csv([policy("P0001"), policy("P0002")]) + "P0003,only,three\n"
    report = run("policies", content)
    assert lines_of(report) == {4: "expected 18 cells as in the header, found 3"}


def test_line_numbers_count_blank_lines_and_quoted_newlines(run):
    content = to_csv([policy("P0001", product_name="安心\n两全"), policy("P0002")])
    content += "\n" + to_csv([policy("P0003", status="x")]).split("\n", 1)[1]
    # header=1, P0001 spans 2-3, P0002=4, blank=5, P0003=6
    report = run("policies", content)
    assert list(lines_of(report)) == [6]


def test_nothing_is_written_when_a_late_row_is_bad(run, db, monkeypatch):
    monkeypatch.setattr(importer, "BATCH_ROWS", 2)  # good batches are flushed before the bad row
    rows = [policy(f"P{i:04d}") for i in range(7)] + [policy("P9999", status="x")]
    report = run("policies", to_csv(rows))
    assert report.rejected == 1 and (report.inserted, report.unchanged) == (0, 0)
    assert count(db, Policy) == count(db, Customer) == 0


def test_rejected_lines_are_capped_in_the_report(run):
    report = run("policies", to_csv([policy(f"P{i:04d}", status="x") for i in range(60)]))
    text = report.render()
    assert report.rejected == 60
    assert text.count("unknown status") == 50 and "... and 10 more" in text


def test_report_masks_id_numbers_and_phones(run):
    bad_phone = "13812345"
    report = run("policies", to_csv([policy("P1", holder_id_number=BAD_CHECK),
                                     policy("P2", holder_phone=bad_phone),
                                     policy("P3", holder_phone="12812345678")]))
    text = report.render()
    assert BAD_CHECK not in text and mask_id_number(BAD_CHECK) in text
    assert bad_phone not in text and "12812345678" not in text and mask_phone("12812345678") in text
    assert "张三丰" not in text


# --- Bad files --------------------------------------------------------------------------------


def test_missing_column_is_a_file_error(run, db):
    header = [c for c in POLICY_COLUMNS if c not in ("status", "pledged")]
    report = run("policies", to_csv([policy()], header), skip_bad=True)
    assert report.file_error.line == 1
    assert "missing column(s) in the header: status, pledged" in report.render()
    assert report.rejected and not report.written and count(db, Policy) == 0


def test_repeated_column_is_a_file_error(run):
    report = run("policies", to_csv([policy()], list(POLICY_COLUMNS) + ["Status "]))
    assert "column status appears more than once" in report.render()


@pytest.mark.parametrize("skip_bad", [False, True])
def test_wrong_encoding_is_a_file_error(run, db, skip_bad):
    gbk = to_csv([policy("P0001"), policy("P0002")]).encode("gbk")
    report = run("policies", gbk, skip_bad=skip_bad)
    assert report.file_error.line == 2
    assert "not UTF-8" in report.render() and "Nothing was written" in report.render()
    assert count(db, Policy) == 0


def test_wrong_encoding_late_in_the_file_writes_nothing(run, db, monkeypatch):
    monkeypatch.setattr(importer, "BATCH_ROWS", 2)
    good = to_csv([policy(f"P{i:04d}", product_name="Life") for i in range(5)])
    report = run("policies", good.encode() + to_csv([policy("P9")]).split("\n", 1)[1].encode("gbk"),
                 skip_bad=True)
    assert report.file_error.line == 7 and report.inserted == 0
    assert count(db, Policy) == 0


def test_utf16_file_is_a_file_error(run):
    report = run("policies", to_csv([policy()]).encode("utf-16"))
    assert report.file_error.line == 1 and "not UTF-8" in str(report.file_error)


def test_empty_file_is_an_error(run, db):
    report = run("policies", b"")
    assert report.rejected and "the file is empty (0 bytes)" in report.render()


def test_blank_first_line_is_an_error(run):
    report = run("policies", "\n" + to_csv([policy()]))
    assert report.file_error.line == 1 and "no header row" in str(report.file_error)


def test_header_only_file_imports_nothing(run, db):
    report = run("policies", "\ufeff" + ",".join(POLICY_COLUMNS) + "\n")
    assert (report.rows, report.inserted, report.rejected) == (0, 0, 0)
    assert report.written and count(db, Policy) == 0


def test_missing_file(cfg, tmp_path):
    report = import_csv(cfg, "policies", tmp_path / "nope.csv", skip_bad=False, progress=False)
    assert report.rejected and "cannot read the file" in report.render()


def test_progress_bar_goes_to_stderr(cfg, tmp_path, capsys):
    path = tmp_path / "p.csv"
    path.write_text(to_csv([policy(f"P{i}") for i in range(5)]), encoding="utf-8")
    report = import_csv(cfg, "policies", path, skip_bad=False, progress=True)
    out, err = capsys.readouterr()
    assert report.inserted == 5 and out == "" and "p.csv" in err


# --- Family members ------------------------------------------------------------------------------


def test_family_import_upserts_by_holder_and_id_number(run, db):
    run("policies", to_csv([policy("P1"), policy("P2", holder_id_number=HOLDER2)]))
    content = to_csv([member(SPOUSE), member(CHILD, relation="child", name="张小", phone=""),
                      member(SPOUSE, holder_id_number=HOLDER2, relation="parent")])
    report = run("family", content)
    assert (report.inserted, report.rejected) == (3, 0) and report.written
    assert "customers" not in report.render() and "tier changes" not in report.render()
    ids = {c.id_number: c.id for c in rows_of(db, Customer)}
    members = {(m.customer_id, m.id_number): m for m in rows_of(db, FamilyMember)}
    assert members[(ids[HOLDER], CHILD)].relation == "child"
    assert members[(ids[HOLDER], CHILD)].phone == ""
    assert members[(ids[HOLDER2], SPOUSE)].relation == "parent"

    report = run("family", content)
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 3)
    report = run("family", to_csv([member(SPOUSE, name="李四四")]))
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 0)
    assert count(db, FamilyMember) == 3


FAMILY_BAD = [
    (member(holder_id_number=HOLDER2), "no customer has this ID number"),
    (member(relation="cousin"), "relation: unknown relation 'cousin'"),
    (member(id_number=BAD_CHECK), "id_number: bad check digit"),
    (member(id_number=HOLDER), "the holder cannot be their own family member"),
    (member(phone="12345"), "phone: not a mainland mobile number"),
    (member(name=""), "name: is empty"),
]


@pytest.mark.parametrize("row,reason", FAMILY_BAD, ids=[r for _, r in FAMILY_BAD])
def test_family_bad_rows(run, db, row, reason):
    run("policies", to_csv([policy("P1")]))
    content = to_csv([member(CHILD, relation="child"), row])
    report = run("family", content)
    assert reason in lines_of(report)[3] and count(db, FamilyMember) == 0
    report = run("family", content, skip_bad=True)
    assert (report.inserted, report.rejected) == (1, 1) and count(db, FamilyMember) == 1


def test_family_member_twice(run, db):
    run("policies", to_csv([policy("P1")]))
    report = run("family", to_csv([member(SPOUSE), member(SPOUSE.lower(), name="x")]))
    assert lines_of(report) == {3: "holder_id_number and id_number repeats line 2"}


def test_family_missing_column(run):
    header = ["holder_id_number", "relation", "name", "id_number"]
    report = run("family", to_csv([member()], header))
    assert "missing column(s) in the header: phone" in report.render()


# --- The command line --------------------------------------------------------------------------


def test_cli_imports_a_good_file_and_exits_0(db_url, db, tmp_path):
    path = tmp_path / "policies.csv"
    path.write_text(to_csv([policy("P1"), policy("P2", holder_id_number=HOLDER2)]),
                    encoding="utf-8")
    res = cli(db_url, "policies", str(path))
    assert res.returncode == 0, res.stderr
    assert "inserted   2" in res.stdout and "rejected   0" in res.stdout
    assert count(db, Policy) == 2

    family = tmp_path / "family.csv"
    family.write_text(to_csv([member()]), encoding="utf-8")
    res = cli(db_url, "family", str(family))
    assert res.returncode == 0, res.stderr
    assert count(db, FamilyMember) == 1


def test_cli_bad_rows_exit_1_and_write_nothing_unless_skip_bad(db_url, db, tmp_path):
    path = tmp_path / "policies.csv"
    path.write_text(to_csv([policy("P1"), policy("P2", holder_id_number=BAD_CHECK),
                            policy("P3", holder_phone="12812345678")]), encoding="utf-8")
    res = cli(db_url, "policies", str(path))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "line 3: holder_id_number: bad check digit" in res.stdout
    assert "line 4: holder_phone: not a mainland mobile number" in res.stdout
    assert BAD_CHECK not in res.stdout and "12812345678" not in res.stdout
    assert count(db, Policy) == 0

    res = cli(db_url, "policies", str(path), "--skip-bad")
    assert res.returncode == 1 and "inserted   1" in res.stdout
    assert count(db, Policy) == 1


@pytest.mark.parametrize("content,code,says", [
    (b"", 1, "the file is empty (0 bytes)"),
    (",".join(POLICY_COLUMNS).encode() + b"\n", 0, "0 rows read"),
    (to_csv([policy()]).encode("gbk"), 1, "line 2: the file is not UTF-8"),
    (to_csv([policy()], [c for c in POLICY_COLUMNS if c != "status"]).encode(), 1,
     "line 1: missing column(s) in the header: status"),
], ids=["empty", "header-only", "gbk", "missing-column"])
def test_cli_file_level_outcomes(db_url, tmp_path, content, code, says):
    path = tmp_path / "policies.csv"
    path.write_bytes(content)
    res = cli(db_url, "policies", str(path))
    assert res.returncode == code, res.stdout + res.stderr
    assert says in res.stdout and "Traceback" not in res.stderr


@pytest.mark.parametrize("cell,value", [("1", True), ("0", False), ("true", True), ("FALSE", False),
                                        ("是", True), ("否", False)])
def test_pledge_and_loan_flags_accept_true_false_and_chinese(cell, value):
    from bot.domain.importer import flag

    assert flag(cell) is value
