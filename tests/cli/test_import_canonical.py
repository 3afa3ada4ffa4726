"""The policy import's fast path for canonical records (`bot.domain.importer.canonical`) and
the set-based writes: a file's outcome is the one docs/imports.md describes whichever path a
row takes. Through `import_csv` on the test's database (the fast path runs on PostgreSQL)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bot.domain.identity import make_id_number
from bot.domain.importer import POLICY_COLUMNS
from bot.domain.importer.canonical import Canonical, cents
from bot.domain.importer.cells import parse_row
from models import Customer, Policy
from tests.support.imports import (HOLDER, HOLDER2, count, lines_of, policy, rows_of, to_csv,
                                 cfg, db, run)  # noqa: F401 (fixtures)

COLUMNS = list(POLICY_COLUMNS)
FIELDS = tuple((c, i, POLICY_COLUMNS[c]) for i, c in enumerate(COLUMNS))
FAST = Canonical(len(COLUMNS), list(range(len(COLUMNS))))
KEPT = ("policy_no", "customer_id", "product_name", "liabilities", "payment_mode",
        "annualized_basic_premium", "single_premium", "annual_regular_topup",
        "initial_lump_sum_topup", "irregular_topup", "effective_date", "payment_years",
        "status", "cooling_off_end_date", "pledged", "policy_loan", "counts_from",
        "counts_until")


def exported(no: str = "P0001", **cells: str) -> dict[str, str]:
    """A row as an export writes it: every cell canonical (the fast path's)."""
    return policy(no, **{"liabilities": "hospitalization;critical_illness", **cells})


def policies_of(db) -> dict[str, tuple]:
    ids = {c.id: c.id_number for c in rows_of(db, Customer)}
    return {p.policy_no: tuple(ids[v] if k == "customer_id" else v
                               for k, v in zip(KEPT, (getattr(p, k) for k in KEPT)))
            for p in rows_of(db, Policy)}


# --- The fast path accepts only what the parsers accept, with the same values ---------------

CELL = {
    "policy_no": st.sampled_from(["P1", "P 1", " P1", "P\\1", "", "P" * 33, "保单1"]),
    "holder_id_number": st.sampled_from([HOLDER, HOLDER.lower(), HOLDER[:17] + "0", " " + HOLDER,
                                         "12345"]),
    "holder_name": st.sampled_from(["张三", " 张三", "张\t三", "a\\b", "", "名" * 64, "名" * 65,
                                    "张 三"]),
    "holder_phone": st.sampled_from(["13812345678", "12812345678", "1381234567", ""]),
    "product_name": st.sampled_from(["安心人生", "", "x" * 129, " 安心 "]),
    "liabilities": st.sampled_from(["", "hospitalization", "critical_illness;hospitalization",
                                    "hospitalization;critical_illness;mild_illness;disability",
                                    "HOSPITALIZATION", "hospitalization; disability", "cancer",
                                    "disability;"]),
    "payment_mode": st.sampled_from(["regular", "single", "Regular", "monthly"]),
    "annualized_basic_premium": st.sampled_from(["", "0", "1234.5", "1234.56", "1234.567",
                                                 "-1", "-0", "1e3", "00012", "9" * 15]),
    "single_premium": st.sampled_from(["0", "", "120000.50", "abc"]),
    "annual_regular_topup": st.sampled_from(["0", "100"]),
    "initial_lump_sum_topup": st.sampled_from(["", "0.01"]),
    "irregular_topup": st.sampled_from(["0", " 5"]),
    "effective_date": st.sampled_from(["2024-01-31", "2024-02-30", "2024-1-31", "20240131",
                                       "0000-01-01"]),
    "payment_years": st.sampled_from(["10", "1", "0", "010", "1000", "x"]),
    "status": st.sampled_from(["in_force", "lapsed", "LAPSED", "void"]),
    "cooling_off_end_date": st.sampled_from(["2024-02-15", "2023-02-29", ""]),
    "pledged": st.sampled_from(["0", "1", "true", "是", "2"]),
    "policy_loan": st.sampled_from(["0", "1", "FALSE", "否", ""]),
}


@hsettings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_a_record_the_fast_path_takes_parses_to_the_same_values(data):
    # An exported row with up to three cells replaced by odd or bad ones.
    cells = exported()
    for column in data.draw(st.lists(st.sampled_from(COLUMNS), max_size=3, unique=True)):
        cells[column] = data.draw(CELL[column])
    record = [cells[c] for c in COLUMNS]
    canonical = FAST.cells(record)
    values, errors = parse_row(FIELDS, record)
    if canonical is None:
        return  # the parsers decide alone
    expected = dict(zip(COLUMNS, canonical))
    for column in ("holder_id_number", "effective_date", "cooling_off_end_date"):
        try:  # remembered checks the fast path makes after the match (see add_canonical)
            POLICY_COLUMNS[column](expected[column])
        except ValueError:
            assert errors
            return
    assert not errors, (record, errors)
    for column, value in values.items():
        text = expected[column]
        if isinstance(value, Decimal):
            assert cents(text) == str(int(value.scaleb(2))), column
        elif isinstance(value, bool):
            assert text == ("1" if value else "0"), column
        elif isinstance(value, date):
            assert date.fromisoformat(text) == value, column
        else:
            assert text == str(value), column


def test_the_fast_path_takes_an_exported_row():
    row = policy(liabilities="hospitalization;critical_illness")  # in the stored order
    assert FAST.cells([row[c] for c in COLUMNS]) is not None
    assert FAST.cells([policy()[c] for c in COLUMNS]) is None  # not in the stored order


# --- Whole files: odd cells and canonical ones give the same policies -------------------------


def test_odd_cells_are_stored_as_their_canonical_twins(run, db, tmp_path):
    canonical = [policy("P0001", liabilities="hospitalization;critical_illness"),
                 policy("P0002", holder_id_number=HOLDER2, holder_name="王五",
                        payment_mode="single", annualized_basic_premium="0",
                        single_premium="120000.50", liabilities="", payment_years="1"),
                 policy("P0003", liabilities="mild_illness;disability", pledged="1",
                        status="lapsed")]
    odd = [policy("P0001", liabilities="hospitalization ; critical_illness",
                  effective_date=" 2024-01-01", policy_loan="FALSE"),
           policy("P0002", holder_id_number=HOLDER2, holder_name=" 王五 ",
                  payment_mode="SINGLE", annualized_basic_premium="", single_premium="120000.5",
                  liabilities="", payment_years="001"),
           policy("P0003", liabilities="disability;mild_illness", pledged="是", status="LAPSED")]
    assert run("policies", to_csv(odd)).inserted == 3
    stored = policies_of(db)
    again = run("policies", to_csv(canonical))  # the same policies written canonically
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    assert policies_of(db) == stored
    assert stored["P0003"][KEPT.index("liabilities")] == "mild_illness;disability"
    assert stored["P0002"][KEPT.index("single_premium")] == Decimal("120000.50")


def test_a_name_with_a_tab_and_a_backslash_is_stored_as_written(run, db):
    report = run("policies", to_csv([exported(holder_name="张\t三\\丰")]))
    assert report.inserted == 1
    assert [c.name for c in rows_of(db, Customer)] == ["张\t三\\丰"]


def test_a_canonical_row_with_a_bad_check_digit_or_day_is_rejected_with_its_line(run, db):
    bad_id = HOLDER[:17] + ("0" if HOLDER[17] != "0" else "1")
    report = run("policies", to_csv([exported("P0001"), exported("P0002", holder_id_number=bad_id),
                                     exported("P0003", effective_date="2024-02-30"),
                                     exported("P0001")]))
    reasons = lines_of(report)
    assert sorted(reasons) == [3, 4, 5]
    assert "holder_id_number: bad check digit" in reasons[3]
    assert "effective_date: not a date" in reasons[4]
    assert "policy_no repeats line 2" in reasons[5]
    assert not report.written and count(db, Policy) == 0


def test_changes_moves_and_unchanged_rows_are_counted_and_flag_both_holders(run, db):
    run("policies", to_csv([exported("P0001"), exported("P0002"),
                            exported("P0003", holder_id_number=HOLDER2, holder_name="王五")]))
    report = run("policies", to_csv([
        exported("P0001"),  # unchanged
        exported("P0002", annualized_basic_premium="36000.00"),  # changed
        exported("P0003", holder_id_number=HOLDER),  # moved from HOLDER2 to HOLDER
        exported("P0004", holder_id_number=HOLDER2, holder_name="王五", holder_phone="13900002222"),
    ]))
    assert (report.inserted, report.updated, report.unchanged) == (1, 2, 1)
    assert (report.customers_inserted, report.customers_updated) == (0, 1)  # HOLDER2's phone
    ids = {c.id_number: c.id for c in rows_of(db, Customer)}
    assert report.affected_customers == {ids[HOLDER], ids[HOLDER2]}
    stored = policies_of(db)
    assert stored["P0003"][1] == HOLDER and stored["P0004"][1] == HOLDER2
    assert stored["P0002"][KEPT.index("annualized_basic_premium")] == Decimal("36000.00")


@pytest.mark.parametrize("rows", [2_500])
def test_a_file_of_several_batches_is_all_written_once(run, db, rows):
    holders = [make_id_number("110105", date(1970, 1, 1 + i % 28), i, "MF"[i % 2])
               for i in range(40)]
    file = [exported(f"P{i:05d}", holder_id_number=holders[i % 40]) for i in range(rows)]
    report = run("policies", to_csv(file))
    assert (report.inserted, report.rejected, count(db, Policy)) == (rows, 0, rows)
    assert report.customers_inserted == 40
    again = run("policies", to_csv(file))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, rows)
