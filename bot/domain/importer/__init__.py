"""CSV imports (`python main.py import policies|family|institutions FILE`).

A file is UTF-8 (with or without BOM) with a header row; column order is free, column names
are matched case-insensitively, and columns the import does not know are ignored (the report
names them). Blank lines are skipped. Empty amount cells count as 0.

The file is streamed: each row is validated in Python (pure functions below). Family members,
institutions and bindings are then written in batches with SQLAlchemy Core (one SELECT per
batch to tell new, changed and unchanged rows apart, then executemany INSERT and UPDATE), all
in one transaction. Policies are staged and written set-based once the whole file is checked
("Policies at scale" below). Without `skip_bad`, nothing is written when any row is rejected
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


# --- Policies at scale: staged, then written set-based ------------------------------------------
#
# A policy file is validated row by row as above, and each good row goes to a scratch table
# (COPY on PostgreSQL; a TEMPORARY table on SQLite, which lives outside the database file and
# takes no lock on it). On PostgreSQL a record whose cells are all canonical (`canonical`: what
# an export writes) is checked by one pattern and a few remembered lookups and goes to COPY as
# the text it is; any other record goes through the parsers. Nothing of the bot's tables is
# touched until the whole file is checked; then the holders and the policies are written
# set-based from the scratch table:
# - PostgreSQL: in one transaction with the staging (all or nothing, even on a crash), in a few
#   statements (`_write_staged_pg`: holders upserted with ON CONFLICT, new policies inserted,
#   changed ones updated, the affected customers flagged);
# - SQLite: in short transactions of BATCH_ROWS rows each, so that the bot's messages wait for
#   one batch at most, never for the whole import. A crash mid-write leaves the batches before it
#   written (and their customers flagged for the tier run, in the same transactions); running
#   the same file again writes the rest (the written rows are then unchanged) and converges.

MONEY_FIELDS = ("annualized_basic_premium", "single_premium", "annual_regular_topup",
                "initial_lump_sum_topup", "irregular_topup")
_STAGED = ("line", "policy_no", "holder_id_number", "holder_name", "holder_phone", "sex",
           "birth_date", *(c for c in POLICY_FIELDS if c != "policy_no"), "counts_from",
           "counts_until")
_DATES = {"birth_date", "effective_date", "cooling_off_end_date", "counts_from", "counts_until"}
_FLAGS = {"pledged", "policy_loan"}
_COMPARED = tuple(c for c in POLICY_FIELDS if c != "policy_no")  # a change of any is an update
_TYPES = {**{c: "BIGINT" for c in MONEY_FIELDS}, **{c: "DATE" for c in _DATES},
          **{c: "BOOLEAN" for c in _FLAGS}, "line": "INTEGER", "payment_years": "INTEGER"}
STAGE = "tmp_import_policy"
HOLDERS = "tmp_import_holder"


class _Stage:
    """The scratch table of one policy import, filled row by row."""

    def __init__(self, conn: Connection, rules) -> None:
        self.conn, self.rules = conn, rules
        self.pg = conn.dialect.name == "postgresql"
        self.raw = conn.connection.driver_connection
        self.rows = 0
        self.lines: list[int] = []  # the line of every BATCH_ROWS-th staged row
        self._holders: dict[str, tuple] = {}
        self._windows: dict[tuple, tuple[date, date]] = {}
        self._buffer: list = []  # PostgreSQL: COPY text lines; SQLite: rows
        self._copy_cm = None
        # The fast path's remembered answers (`add_canonical`), by cell text.
        self._canonical_holders: dict[str, tuple[str, str]] = {}
        self._text_windows: dict[tuple, tuple[str, str]] = {}
        self._cents: dict[str, str] = {}
        self._parse_id = POLICY_COLUMNS["holder_id_number"]
        self._parse_date = POLICY_COLUMNS["effective_date"]
        key = "" if self.pg else " PRIMARY KEY"
        columns = ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}{key if c == 'line' else ''}"
                            for c in _STAGED)
        self._sql(f"DROP TABLE IF EXISTS {STAGE}")
        self._sql(f"CREATE TEMPORARY TABLE {STAGE} ({columns})")
        if self.pg:
            self._cursor = self.raw.cursor()
            self._copy_cm = self._cursor.copy(f"COPY {STAGE} ({', '.join(_STAGED)}) FROM STDIN")
            self._copy = self._copy_cm.__enter__()

    def _sql(self, sql: str) -> None:
        if self.pg:
            self.conn.exec_driver_sql(sql)
        else:  # outside any transaction of the database file: the temp schema only
            self.raw.execute(sql)

    def add(self, line: int, v: Values) -> None:
        number = v["holder_id_number"]
        holder = self._holders.get(number)
        if holder is None:
            holder = self._holders[number] = (id_sex(number), id_birth_date(number))
        terms = (v["effective_date"], v["cooling_off_end_date"], v["payment_mode"],
                 v["payment_years"])
        span = self._windows.get(terms)
        if span is None:
            span = window_of(*terms, self.rules)
            if len(self._windows) < 200_000:
                self._windows[terms] = span
        start, until = span
        row = (line, v["policy_no"], number, v["holder_name"], v["holder_phone"], *holder,
               *(int(v[c].scaleb(2)) if c in MONEY_FIELDS else v[c] for c in _COMPARED),
               start, until)
        if self.rows % BATCH_ROWS == 0:
            self.lines.append(line)
        self.rows += 1
        if self.pg:
            self._buffer.append("\t".join(map(_copy_text, row)) + "\n")
            if len(self._buffer) >= BATCH_ROWS:
                self.flush()
            return
        self._buffer.append(tuple(x.isoformat() if isinstance(x, date) else
                                  int(x) if isinstance(x, bool) else x for x in row))
        if len(self._buffer) >= BATCH_ROWS:
            self.flush()

    def add_canonical(self, line: int, cells: tuple[str, ...]) -> bool:
        """Stage a record the fast path matched (`canonical`): its cells in POLICY_COLUMNS
        order, already the text COPY reads. False when a remembered check refuses it (a bad
        check digit, no such date): the parsers then say why."""
        (policy, number, name, phone, product, liabilities, mode, m1, m2, m3, m4, m5,
         effective, years, status, cooling, pledged, loan) = cells
        holder = self._canonical_holders.get(number)
        if holder is None:
            try:
                self._parse_id(number)
            except ValueError:
                return False
            holder = self._canonical_holders[number] = (id_sex(number),
                                                        id_birth_date(number).isoformat())
            self._holders[number] = holder
        terms = (effective, cooling, mode, years)
        span = self._text_windows.get(terms)
        if span is None:
            try:
                start, until = window_of(self._parse_date(effective), self._parse_date(cooling),
                                         mode, int(years), self.rules)
            except ValueError:
                return False
            span = (start.isoformat(), until.isoformat())
            if len(self._text_windows) < 200_000:
                self._text_windows[terms] = span
        money = self._cents
        amounts = []
        for m in (m1, m2, m3, m4, m5):
            c = money.get(m)
            if c is None:
                c = money[m] = cents(m)
            amounts.append(c)
        if self.rows % BATCH_ROWS == 0:
            self.lines.append(line)
        self.rows += 1
        self._buffer.append("\t".join((
            str(line), policy, number, name, phone, *holder, product, liabilities, mode,
            *amounts, effective, years, status, cooling, pledged, loan, *span)) + "\n")
        if len(self._buffer) >= BATCH_ROWS:
            self.flush()
        return True

    def flush(self) -> None:
        if self._buffer and self.pg:
            self._copy.write("".join(self._buffer))
            self._buffer.clear()
        elif self._buffer:
            marks = ", ".join("?" * len(_STAGED))
            self.raw.execute("BEGIN")  # deferred: locks the temp schema only
            self.raw.executemany(f"INSERT INTO {STAGE} VALUES ({marks})", self._buffer)
            self.raw.execute("COMMIT")
            self._buffer.clear()

    def abort(self, exc: BaseException) -> None:
        """Stop a COPY under way (the server drops it), so the transaction can roll back."""
        if self.pg and self._copy_cm is not None:
            cm, self._copy_cm = self._copy_cm, None
            try:
                cm.__exit__(type(exc), exc, exc.__traceback__)
            except Exception:  # the COPY fails as asked; the rollback follows
                pass
            self._cursor.close()

    def close(self) -> None:
        """The staging is complete: the holders table (each holder's last row in the file)."""
        self.flush()
        if self.pg:
            cm, self._copy_cm = self._copy_cm, None
            cm.__exit__(None, None, None)
            self._cursor.close()
        self._sql(f"DROP TABLE IF EXISTS {HOLDERS}")
        key = "" if self.pg else " PRIMARY KEY"
        self._sql(f"CREATE TEMPORARY TABLE {HOLDERS} (seq INTEGER{key}, id_number TEXT, "
                  f"name TEXT, phone TEXT, sex TEXT, birth_date DATE)")
        self._sql(f"""
            INSERT INTO {HOLDERS} (seq, id_number, name, phone, sex, birth_date)
            SELECT row_number() OVER (ORDER BY holder_id_number), holder_id_number,
                   holder_name, holder_phone, sex, birth_date
            FROM (SELECT holder_id_number, holder_name, holder_phone, sex, birth_date,
                         row_number() OVER (PARTITION BY holder_id_number ORDER BY line DESC) AS rn
                  FROM {STAGE}) AS last_rows
            WHERE rn = 1""")
        if self.pg:
            self._sql(f"ANALYZE {STAGE}")
            self._sql(f"ANALYZE {HOLDERS}")
        self.holders = len(self._holders)

    def drop(self) -> None:
        for table in (HOLDERS, STAGE):
            self._sql(f"DROP TABLE IF EXISTS {table}")


def _copy_text(value) -> str:
    """A staged value as PostgreSQL's COPY text format writes it."""
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace(
            "\n", "\\n").replace("\r", "\\r")
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _differs(p: str, s: str, c: str) -> str:
    return " OR ".join([f"{p}.customer_id <> {c}.id",
                        *(f"{p}.{col} <> {s}.{col}" for col in _COMPARED)])


def _write_holders(conn: Connection, lo: int, hi: int, report: ImportReport) -> None:
    """Insert the new holders with seq in [lo, hi], update those whose details changed."""
    where = {"lo": lo, "hi": hi, "tier": CUSTOMER_T.c.tier.default.arg}
    report.customers_inserted += conn.execute(text(f"""
        INSERT INTO customer (id_number, name, phone, sex, birth_date, tier, contribution,
                              needs_recompute)
        SELECT h.id_number, h.name, h.phone, h.sex, h.birth_date, :tier, 0, false
        FROM {HOLDERS} h
        WHERE h.seq BETWEEN :lo AND :hi
          AND NOT EXISTS (SELECT 1 FROM customer c WHERE c.id_number = h.id_number)"""),
        where).rowcount
    report.customers_updated += conn.execute(text(f"""
        UPDATE customer SET name = h.name, phone = h.phone, sex = h.sex, birth_date = h.birth_date
        FROM {HOLDERS} h
        WHERE customer.id_number = h.id_number AND h.seq BETWEEN :lo AND :hi
          AND (customer.name <> h.name OR customer.phone <> h.phone OR customer.sex <> h.sex
               OR customer.birth_date <> h.birth_date)"""), where).rowcount


def _write_policies(conn: Connection, lo: int, hi: int, rows: int, report: ImportReport) -> None:
    """Write the staged policies of lines [lo, hi] (`rows` of them): flag the customers whose
    policies are new, changed or moved (both holders of a moved one), update the changed
    policies, insert the new ones, and keep every window in step."""
    where = {"lo": lo, "hi": hi}
    affected = list(conn.execute(text(f"""
        SELECT c.id FROM {STAGE} s
          JOIN customer c ON c.id_number = s.holder_id_number
          LEFT JOIN policy p ON p.policy_no = s.policy_no
        WHERE s.line BETWEEN :lo AND :hi AND (p.id IS NULL OR {_differs('p', 's', 'c')})
        UNION
        SELECT p.customer_id FROM {STAGE} s
          JOIN customer c ON c.id_number = s.holder_id_number
          JOIN policy p ON p.policy_no = s.policy_no
        WHERE s.line BETWEEN :lo AND :hi AND ({_differs('p', 's', 'c')})"""), where).scalars())
    report.affected_customers.update(affected)
    for at in range(0, len(affected), 50_000):
        mark_for_recompute(conn, set(affected[at:at + 50_000]))
    assign = ", ".join(f"{col} = s.{col}" for col in (*_COMPARED, "counts_from", "counts_until"))
    updated = conn.execute(text(f"""
        UPDATE policy SET customer_id = c.id, {assign}
        FROM {STAGE} s JOIN customer c ON c.id_number = s.holder_id_number
        WHERE policy.policy_no = s.policy_no AND s.line BETWEEN :lo AND :hi
          AND ({_differs('policy', 's', 'c')})"""), where).rowcount
    conn.execute(text(f"""
        UPDATE policy SET counts_from = s.counts_from, counts_until = s.counts_until
        FROM {STAGE} s
        WHERE policy.policy_no = s.policy_no AND s.line BETWEEN :lo AND :hi
          AND (policy.counts_from IS NULL OR policy.counts_until IS NULL
               OR policy.counts_from <> s.counts_from OR policy.counts_until <> s.counts_until)"""),
        where)
    columns = ", ".join(("policy_no", *_COMPARED, "counts_from", "counts_until"))
    inserted = conn.execute(text(f"""
        INSERT INTO policy (customer_id, {columns})
        SELECT c.id, {', '.join(f's.{col}' for col in columns.split(', '))}
        FROM {STAGE} s JOIN customer c ON c.id_number = s.holder_id_number
        WHERE s.line BETWEEN :lo AND :hi
          AND NOT EXISTS (SELECT 1 FROM policy p WHERE p.policy_no = s.policy_no)"""),
        where).rowcount
    report.inserted += inserted
    report.updated += updated
    report.unchanged += rows - inserted - updated


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
            stage = _Stage(conn, rules)
            fast = Canonical(layout.width, [i for _, i, _ in layout.fields]) if pg else None
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
            stage.close()
            seen.clear()
            report.written = report.skip_bad or not report.rejected
            if report.written and stage.rows:
                _write_staged(conn, stage, report, pg)
            if tx is not None:
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


AFFECTED = "tmp_import_affected"


def _write_staged_pg(conn: Connection, stage: _Stage, report: ImportReport) -> None:
    """PostgreSQL, in the import's one transaction: the holders upserted in one statement,
    the new policies inserted in one, the changed ones updated in one (a self-join keeps each
    one's previous holder, who is affected by a move too), and the affected customers flagged
    in one; no statement per row. A new holder is flagged as it is inserted (its policies are
    all new), so the flagging updates only customers who existed before."""
    tier = CUSTOMER_T.c.tier.default.arg
    holder_cols = ("name", "phone", "sex", "birth_date")
    inserted, updated = conn.execute(text(f"""
        WITH up AS (
            INSERT INTO customer (id_number, name, phone, sex, birth_date, tier, contribution,
                                  needs_recompute)
            SELECT h.id_number, h.name, h.phone, h.sex, h.birth_date, :tier, 0, true
            FROM {HOLDERS} h
            ON CONFLICT (id_number) DO UPDATE
               SET {', '.join(f"{c} = excluded.{c}" for c in holder_cols)}
             WHERE ({', '.join(f"customer.{c}" for c in holder_cols)})
                   IS DISTINCT FROM ({', '.join(f"excluded.{c}" for c in holder_cols)})
            RETURNING xmax = 0 AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"""),
        {"tier": tier}).one()
    report.customers_inserted += inserted
    report.customers_updated += updated
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {AFFECTED}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {AFFECTED} (id INTEGER)")
    windows = ("counts_from", "counts_until")
    columns = ("policy_no", *_COMPARED, *windows)
    inserted = conn.exec_driver_sql(f"""
        WITH ins AS (
            INSERT INTO policy (customer_id, {', '.join(columns)})
            SELECT c.id, {', '.join(f's.{col}' for col in columns)}
            FROM {STAGE} s JOIN customer c ON c.id_number = s.holder_id_number
            ON CONFLICT (policy_no) DO NOTHING
            RETURNING customer_id),
        mark AS (INSERT INTO {AFFECTED} (id) SELECT DISTINCT customer_id FROM ins)
        SELECT count(*) FROM ins""").scalar_one()
    assign = ", ".join(f"{col} = s.{col}" for col in (*_COMPARED, *windows))
    changed = _differs("old", "s", "c")
    windows_differ = " OR ".join(f"old.{w} IS DISTINCT FROM s.{w}" for w in windows)
    updated = conn.exec_driver_sql(f"""
        WITH up AS (
            UPDATE policy SET customer_id = c.id, {assign}
            FROM {STAGE} s JOIN customer c ON c.id_number = s.holder_id_number, policy old
            WHERE policy.policy_no = s.policy_no AND old.id = policy.id
              AND ({changed} OR {windows_differ})
            RETURNING c.id AS now_id, old.customer_id AS was_id, ({changed}) AS changed),
        mark AS (INSERT INTO {AFFECTED} (id)
                 SELECT now_id FROM up WHERE changed
                 UNION SELECT was_id FROM up WHERE changed)
        SELECT count(*) FILTER (WHERE changed) FROM up""").scalar_one()
    conn.exec_driver_sql(f"""
        UPDATE customer SET needs_recompute = true
        FROM (SELECT DISTINCT id FROM {AFFECTED}) a
        WHERE customer.id = a.id AND NOT customer.needs_recompute""")
    report.affected_customers.update(
        conn.exec_driver_sql(f"SELECT DISTINCT id FROM {AFFECTED}").scalars())
    conn.exec_driver_sql(f"DROP TABLE {AFFECTED}")
    report.inserted += inserted
    report.updated += updated
    report.unchanged += stage.rows - inserted - updated


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
