"""A first policy import on PostgreSQL (into an empty policy table) drops the table's secondary
indexes and constraints and builds them again after the insert, in the import's one
transaction (docs/imports.md). Whichever path an import takes, its outcome is the one
docs/imports.md describes: the same policies stored, bad rows named by their line, nothing
written when a row is bad or the import fails, and the table's indexes as before."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from bot.domain.importer.report import ImportReport
from models import Customer, Policy
from tests.cli.test_import_canonical import exported, policies_of
from tests.support.imports import (HOLDER, HOLDER2, count, lines_of, to_csv,
                                   cfg, db, run)  # noqa: F401 (fixtures)

FILE = [exported("P0001"), exported("P0002", annualized_basic_premium="36000.00"),
        exported("P0003", holder_id_number=HOLDER2, holder_name="王五",
                 payment_mode="single", annualized_basic_premium="0",
                 single_premium="120000.50", liabilities="", payment_years="1"),
        exported("P0004", holder_id_number=HOLDER2, holder_name="王五", status="lapsed")]
OTHER = exported("Q0001", holder_id_number=HOLDER2, holder_name="王五")  # not in FILE


def _pg(db) -> None:
    if db.dialect.name != "postgresql":
        pytest.skip("the index rebuild is PostgreSQL's")


def _catalog(db) -> list[tuple]:
    """The policy table's indexes and constraints, as the catalog defines them."""
    with db.connect() as c:
        return c.execute(text("""
            SELECT 'index', c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
              JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'policy'::regclass
            UNION ALL
            SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = 'policy'::regclass
            ORDER BY 1, 2""")).all()


def _emptied(db) -> None:
    with db.begin() as c:
        tables = c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                "AND tablename <> 'alembic_version'")).scalars().all()
        c.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def test_a_first_import_rebuilds_the_indexes_and_stores_what_the_ordinary_path_stores(run, db):
    _pg(db)
    before = _catalog(db)
    assert len([r for r in before if r[0] == "index"]) == 5  # pkey, policy_no, 3 secondary
    first = run("policies", to_csv(FILE))
    assert first.first_import and "indexes rebuilt" in first.phases
    assert (first.inserted, first.customers_inserted, first.rejected) == (4, 2, 0)
    assert _catalog(db) == before
    rebuilt = policies_of(db)

    _emptied(db)
    run("policies", to_csv([OTHER]))  # a policy already there: the ordinary path
    ordinary = run("policies", to_csv(FILE))
    assert not ordinary.first_import and "indexes rebuilt" not in ordinary.phases
    assert (ordinary.inserted, ordinary.customers_inserted) == (4, 1)  # HOLDER2 was there
    assert {k: v for k, v in policies_of(db).items() if k != "Q0001"} == rebuilt
    assert _catalog(db) == before
    # The rebuilt unique key still holds: the same file again changes nothing.
    again = run("policies", to_csv(FILE))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)


def test_a_first_import_with_a_bad_row_names_its_line_and_writes_nothing(run, db):
    bad = [*FILE[:2], exported("P0009", effective_date="2024-02-30"), *FILE[2:]]
    report = run("policies", to_csv(bad))
    assert list(lines_of(report)) == [4]  # the header is line 1
    assert "effective_date: not a date" in lines_of(report)[4]
    assert not report.written
    assert (count(db, Policy), count(db, Customer)) == (0, 0)
    good = run("policies", to_csv(bad), skip_bad=True)
    assert (good.inserted, good.rejected, count(db, Policy)) == (4, 1, 4)


def test_a_first_import_that_fails_after_the_rebuild_leaves_nothing_behind(run, db,
                                                                           monkeypatch):
    _pg(db)
    before = _catalog(db)
    timed = ImportReport.phase

    def failing(self, name):  # the rows are in and the indexes built again: then it fails
        if name == "customers flagged":
            raise RuntimeError("the import dies here")
        return timed(self, name)
    monkeypatch.setattr(ImportReport, "phase", failing)
    with pytest.raises(RuntimeError):
        run("policies", to_csv(FILE))
    assert (count(db, Policy), count(db, Customer)) == (0, 0)
    assert _catalog(db) == before


def test_a_first_import_takes_the_ordinary_path_while_someone_reads_policies(run, db):
    _pg(db)
    before = _catalog(db)
    with db.connect() as reader:
        reader.execute(text("SELECT count(*) FROM policy"))  # holds ACCESS SHARE until rollback
        report = run("policies", to_csv(FILE))
        reader.rollback()
    assert not report.first_import and report.inserted == 4
    assert _catalog(db) == before
