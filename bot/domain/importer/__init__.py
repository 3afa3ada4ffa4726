"""CSV imports (`python main.py import policies|family|institutions FILE`).

A file is UTF-8 (with or without BOM) with a header row; column order is free, column names
are matched case-insensitively, and columns the import does not know are ignored (the report
names them). Blank lines are skipped. Empty amount cells count as 0.

The file is streamed: each row is validated in Python (pure functions below). Family members,
institutions and bindings are then written in batches with SQLAlchemy Core (one SELECT per
batch to tell new, changed and unchanged rows apart, then executemany INSERT and UPDATE), all
in one transaction. Policies are staged and written set-based once the whole file is checked
(`staging`). Without `skip_bad`, nothing is written when any row is rejected
(the rest of the file is still checked so the report lists every bad line); with it, the good
rows are imported. A policy number (or a family member of one holder) twice in one file is an
error on its second line. A policy import flags the customers it touched (`needs_recompute`)
in the transaction that writes their policies; after it commits, the tier engine
re-evaluates them, and any flagged by an earlier import that was interrupted before its tier
run, in its own transaction (new policies can upgrade a customer at once), clearing the
flags. The daily job evaluates every flagged customer too, so a crash always converges.

Messages name the file line (the header is line 1) and never show a whole ID or phone number.

A package: the cell parsers and row specifications (`cells`), the report (`report`), the CSV
reader (`csv_reader`), one writer per kind (`writers`); the import itself (batches, the staged
policies, the tier run) is here.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path

from sqlalchemy import Connection, Engine, insert, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from tqdm import tqdm

from bot.infra.config import Settings
from bot.infra.db import engine_for
from bot.domain.identity import (id_birth_date, id_sex, is_valid_phone, mask_id_number, mask_phone,
                          validate_id_number)
from bot.domain import accounts
from bot.domain.staff_desk import audit_many
from bot.domain.rules import RulesError, load_rules
from bot.domain.tier_engine import recompute
from bot.domain.tiers import window_of
from bot.domain.vocab import WEEKDAYS, InstitutionKind, Liability, PaymentMode, PolicyStatus, Relation
from models import Customer, FamilyMember, Institution, Policy
from bot.domain.importer.cells import (BINDING_COLUMNS, CUSTOMER_T, FAMILY_COLUMNS, FAMILY_T,
                                       FLAGS, HOLDER_FIELDS, INSTITUTION_KINDS, INSTITUTION_T,
                                       LIABILITIES, PAYMENT_MODES, POLICY_COLUMNS, POLICY_FIELDS,
                                       POLICY_T, RELATIONS, STATUSES, choice, closed_days, Field,
                                       flag, forget, id_number, institution_code,
                                       institution_columns, institution_phone, iso_date,
                                       liabilities, memo, money, not_self, openid, optional_phone,
                                       parse_row, Parser, phone, policy_no, required_text,
                                       service_codes, Values, years)
from bot.domain.importer.report import (KEPT_REJECTIONS, SHOWN_REJECTIONS, FileError, ImportReport,
                                        Rejection)
from bot.domain.importer.csv_reader import (_Lines, _records, Layout, read_header)
from bot.domain.importer.canonical import Canonical, cents
from bot.domain.importer.staging import _Stage, _write_holders, _write_policies, _write_staged_pg
from bot.domain.importer.writers import (BINDING_REFUSALS, mark_for_recompute,
                                         marked_for_recompute, sync_rows, Synced, write_bindings,
                                         write_family, write_institutions)

BATCH_ROWS = 2000
SCOPED_RECOMPUTE_MAX = 10_000  # more affected customers than this: recompute everyone


# --- The import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    columns: dict[str, Parser]
    write: Callable[..., None] | None  # a batch's writer (None: policies, staged and set-based)
    key: tuple[str, ...]  # columns whose values are unique within one file
    check: Callable[[Values], str | None] | None = None  # a rule across columns
    optional: tuple[str, ...] = ()  # columns a file may leave out
    unique: tuple[tuple[str, ...], ...] = ()  # more keys, each unique within one file on its own


KINDS = {
    "policies": Kind(POLICY_COLUMNS, None, ("policy_no",)),  # staged: _import_policies
    "family": Kind(FAMILY_COLUMNS, write_family, ("holder_id_number", "id_number"), not_self),
}


def bindings_kind(settings: Settings, actor: str = "cli") -> Kind:
    """`bind --file`: one openid per customer and one customer per openid, in the file too;
    bound_at in the programme's time zone."""
    return Kind(BINDING_COLUMNS, partial(write_bindings, tz=settings.tz, actor=actor), ("openid",),
                unique=(("id_number",),))


def institutions_kind(settings: Settings) -> Kind:
    """The institutions import, checking services against the rules file's codes."""
    rules = load_rules(settings.rules_file)
    return Kind(institution_columns(tuple(rules.booking.services)), write_institutions,
                ("code",), optional=("closed",))


def import_csv(settings: Settings, kind: str, path: Path, *, skip_bad: bool,
               progress: bool, actor: str = "cli") -> ImportReport:
    """Import one CSV file of `kind` ("policies", "family", "institutions" or "bindings");
    see the module docstring."""
    report = ImportReport(kind, path, skip_bad=skip_bad)
    started = time.monotonic()
    try:
        _import_file(settings, kind, path, report, progress, actor)
    except FileError as exc:
        report.abort(exc.line, exc.reason)
    except RulesError as exc:
        report.abort(None, str(exc))
    except OSError as exc:
        report.abort(None, f"cannot read the file: {exc.strerror or exc}")
    except (IntegrityError, OperationalError) as exc:  # e.g. a concurrent import, a locked file
        # The driver's message may quote personal data: name the error class only.
        report.abort(None, f"the database refused the import ({type(exc.orig).__name__}); "
                           f"run it again")
    finally:
        forget()
    report.seconds = time.monotonic() - started
    return report


def _import_file(settings: Settings, kind: str, path: Path, report: ImportReport,
                 progress: bool, actor: str) -> None:
    spec = (institutions_kind(settings) if kind == "institutions"
            else bindings_kind(settings, actor) if kind == "bindings" else KINDS[kind])
    tiers = _tier_recompute(settings) if kind == "policies" else None
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        if size == 0:
            raise FileError(1, "the file is empty (0 bytes); expected a header row")
        lines = _Lines(fh)
        records = _records(lines)
        first = next(records, None)
        if first is None or first[0] != 1:
            raise FileError(1, "no header row on line 1")
        layout = read_header(first[1], spec.columns, spec.optional)
        report.ignored_columns = list(layout.ignored)
        engine = engine_for(settings, pool_timeout=30)
        try:
            with tqdm(total=size, unit="B", unit_scale=True, desc=path.name, file=sys.stderr,
                      disable=not progress, leave=False) as bar:
                advance = lambda: bar.update(lines.bytes - bar.n)  # noqa: E731
                if kind == "policies":
                    _import_policies(engine, spec, layout, records, report, advance,
                                     load_rules(settings.rules_file))
                else:
                    _import_rows(engine, spec, layout, records, report, advance)
            if report.written and tiers:
                with report.phase("tier run"):
                    report.tier_changes = tiers(engine, report.affected_customers)
        finally:
            engine.dispose()


def _import_rows(engine: Engine, spec: Kind, layout: Layout,
                 records: Iterator[tuple[int, list[str]]], report: ImportReport,
                 advance: Callable[[], None]) -> None:
    """Validate and write every record in one transaction; roll back when a row was
    rejected and `skip_bad` is off (still checking the rest, so every bad line is listed)."""
    seen: dict[tuple[str, ...], int] = {}  # key -> line of its first occurrence
    batch: list[tuple[int, Values]] = []

    def writing() -> bool:
        return report.skip_bad or not report.rejected

    def flush() -> None:
        spec.write(conn, batch, report, dry=not writing())
        batch.clear()
        advance()

    with engine.connect() as conn, conn.begin() as tx:  # an exception rolls back
        for line, cells in records:
            report.rows += 1
            try:
                batch.append((line, check_record(spec, layout, cells, seen, line)))
            except ValueError as exc:
                report.reject(line, str(exc))
            if len(batch) >= BATCH_ROWS:
                flush()
        if batch:
            flush()
        if not writing():
            tx.rollback()
            report.discard_counts()
    report.written = writing()


def _import_policies(engine: Engine, spec: Kind, layout: Layout,
                     records: Iterator[tuple[int, list[str]]], report: ImportReport,
                     advance: Callable[[], None], rules) -> None:
    """Validate every record into the scratch table, then write (see above)."""
    seen: dict[tuple[str, ...], int] = {}
    with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        tx = conn.begin() if pg else None  # SQLite: no transaction on the file while staging
        if pg:  # the set-based writes hash and sort the whole file in memory
            conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        stage = None
        try:
            stage = _Stage(conn, rules, BATCH_ROWS)
            fast = Canonical(layout.width, [i for _, i, _ in layout.fields]) if pg else None
            with report.phase("read, check, stage"):
                for line, cells in records:
                    report.rows += 1
                    if fast is not None and (canonical := fast.cells(cells)) is not None:
                        if seen.setdefault((canonical[0],), line) == line:
                            if stage.add_canonical(line, canonical):
                                if report.rows % BATCH_ROWS == 0:
                                    advance()
                                continue
                            del seen[(canonical[0],)]  # the parsers record it again
                    try:
                        values = check_record(spec, layout, cells, seen, line)
                    except ValueError as exc:
                        report.reject(line, str(exc))
                    else:
                        stage.add(line, values)
                    if report.rows % BATCH_ROWS == 0:
                        advance()
            with report.phase("holders scratch"):
                stage.close()
            seen.clear()
            report.written = report.skip_bad or not report.rejected
            if report.written and stage.rows:
                _write_staged(conn, stage, report, pg)
            if tx is not None:
                with report.phase("commit"):
                    (tx.commit if report.written else tx.rollback)()
            if not pg:
                stage.drop()
        except BaseException as exc:
            if stage is not None:
                stage.abort(exc)
            if tx is not None and tx.is_active:
                tx.rollback()
            report.written = False
            raise
    if not report.written:
        report.discard_counts()


def _write_staged(conn: Connection, stage: _Stage, report: ImportReport, pg: bool) -> None:
    if pg:  # one transaction, a few set-based statements
        _write_staged_pg(conn, stage, report)
        return
    for lo in range(1, stage.holders + 1, BATCH_ROWS):
        with conn.begin():
            _write_holders(conn, lo, lo + BATCH_ROWS - 1, report)
    bounds = [*stage.lines, 2**31 - 1]
    for i, lo in enumerate(stage.lines):
        rows = min(BATCH_ROWS, stage.rows - i * BATCH_ROWS)
        with conn.begin():
            _write_policies(conn, lo, bounds[i + 1] - 1, rows, report)
        batch_committed()


def batch_committed() -> None:
    """Called after each SQLite batch of a policy import commits: a seam where the crash
    tests stop the process (as kill -9 would); it does nothing."""


def check_record(spec: Kind, layout: Layout, cells: list[str],
                 seen: dict[tuple, int], line: int) -> Values:
    """The parsed values of one record, or ValueError with every reason it is rejected.
    Records the row's key in `seen` (a repeated key is an error on its second occurrence)."""
    if len(cells) != layout.width:
        raise ValueError(f"expected {layout.width} cells as in the header, found {len(cells)}")
    values, errors = parse_row(layout.fields, cells)
    repeats = []
    for i, names in enumerate((spec.key, *spec.unique)):
        if all(k in values for k in names):
            key = tuple(values[k] for k in names) if i == 0 else (i, *(values[k] for k in names))
            if seen.setdefault(key, line) != line:
                repeats.append(f"{' and '.join(names)} repeats line {seen[key]}")
    errors[:0] = repeats
    if not errors and spec.check and (problem := spec.check(values)):
        errors.append(problem)
    if errors:
        raise ValueError("; ".join(errors))
    return values


def _tier_recompute(settings: Settings) -> Callable[[Engine, set[int]], str]:
    """Re-evaluates the tiers of the given customers and describes the changes. The rules are
    loaded now, before anything is written, so that a bad rules file stops the import."""
    rules = load_rules(settings.rules_file)

    def run(engine: Engine, customer_ids: set[int]) -> str:
        try:
            # Also those an earlier import changed but never evaluated (it was interrupted).
            leftover = marked_for_recompute(engine) - customer_ids
        except SQLAlchemyError:
            leftover = set()
        customer_ids = customer_ids | leftover
        if not customer_ids:
            return "none (no policy changed)"
        ids = sorted(customer_ids) if len(customer_ids) <= SCOPED_RECOMPUTE_MAX else None
        started = time.monotonic()
        try:
            # Fast up and drops at once; review downgrades are the daily job's, after the
            # review day has ended.
            result = recompute(engine, rules, datetime.now(settings.tz).date(), customer_ids=ids,
                               review=False)
        except SQLAlchemyError as exc:  # the import itself is committed
            return (f"not evaluated ({type(exc).__name__}); the import is saved: run "
                    f"`python main.py tiers recompute`")
        note = (f"; {len(leftover)} of them left unevaluated by an interrupted earlier run"
                if leftover else "")
        return (f"{result.upgrades} upgraded, {result.downgrades} downgraded, "
                f"{result.drops} dropped ({result.evaluated} customers evaluated in "
                f"{time.monotonic() - started:.1f} s{note})")
    return run
