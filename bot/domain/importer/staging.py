"""A policy file at scale: the scratch table it is staged in (`_Stage`: COPY on PostgreSQL, a
TEMPORARY table on SQLite) and the set-based writes from it into the bot's tables."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from bot.domain.identity import id_birth_date, id_sex
from bot.domain.tiers import window_of
from bot.domain.importer.cells import CUSTOMER_T, POLICY_COLUMNS, POLICY_FIELDS, Values
from bot.domain.importer.report import ImportReport
from bot.domain.importer.canonical import cents
from bot.domain.importer.writers import mark_for_recompute


# A policy file is validated row by row (`check_record`, in the package), and each good row goes to a scratch table
# (COPY on PostgreSQL; a TEMPORARY table on SQLite, which lives outside the database file and
# takes no lock on it). On PostgreSQL a record whose cells are all canonical (`canonical`: what
# an export writes) is checked by one pattern and a few remembered lookups and goes to COPY as
# the text it is; any other record goes through the parsers. Nothing of the bot's tables is
# touched until the whole file is checked; then the holders and the policies are written
# set-based from the scratch table:
# - PostgreSQL: in one transaction with the staging (all or nothing, even on a crash), in a few
#   statements (`_write_staged_pg`: new holders inserted and changed ones updated, new policies
#   inserted, changed ones updated, the affected customers flagged; into an empty policy table
#   with its secondary indexes and constraints dropped and built again after the insert);
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

    def __init__(self, conn: Connection, rules, batch_rows: int) -> None:
        self.conn, self.rules, self.batch_rows = conn, rules, batch_rows
        self.pg = conn.dialect.name == "postgresql"
        self.raw = conn.connection.driver_connection
        self.rows = 0
        self.lines: list[int] = []  # the line of every batch_rows-th staged row
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
        if self.rows % self.batch_rows == 0:
            self.lines.append(line)
        self.rows += 1
        if self.pg:
            self._buffer.append("\t".join(map(_copy_text, row)) + "\n")
            if len(self._buffer) >= self.batch_rows:
                self.flush()
            return
        self._buffer.append(tuple(x.isoformat() if isinstance(x, date) else
                                  int(x) if isinstance(x, bool) else x for x in row))
        if len(self._buffer) >= self.batch_rows:
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
        if self.rows % self.batch_rows == 0:
            self.lines.append(line)
        self.rows += 1
        self._buffer.append("\t".join((
            str(line), policy, number, name, phone, *holder, product, liabilities, mode,
            *amounts, effective, years, status, cooling, pledged, loan, *span)) + "\n")
        if len(self._buffer) >= self.batch_rows:
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
AFFECTED = "tmp_import_affected"


def _write_staged_pg(conn: Connection, stage: _Stage, report: ImportReport) -> None:
    """PostgreSQL, in the import's one transaction: the new holders inserted and the changed
    ones updated, the new policies inserted and the changed ones updated (a self-join keeps
    each one's previous holder, who is affected by a move too), and the affected customers
    flagged; one statement each, none per row. New rows are told apart by anti-joins (hashed,
    not probed row by row; ON CONFLICT stays as the guard against a concurrent import). A new
    holder is flagged as it is inserted (its policies are all new), so the flagging updates
    only customers who existed before.

    A first import (the policy table empty, and nobody else using it) locks the policy table,
    drops its secondary indexes and constraints, inserts, and builds them again, all in the
    same transaction (`_rebuilt_after`): one sort per index instead of a million index
    insertions and foreign-key checks."""
    conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    tier = CUSTOMER_T.c.tier.default.arg
    holder_cols = ("name", "phone", "sex", "birth_date")
    with report.phase("customers"):
        report.customers_inserted += conn.execute(text(f"""
            INSERT INTO customer (id_number, name, phone, sex, birth_date, tier, contribution,
                                  needs_recompute)
            SELECT h.id_number, h.name, h.phone, h.sex, h.birth_date, :tier, 0, true
            FROM {HOLDERS} h
            WHERE NOT EXISTS (SELECT 1 FROM customer c WHERE c.id_number = h.id_number)
            ON CONFLICT (id_number) DO NOTHING"""), {"tier": tier}).rowcount
        report.customers_updated += conn.exec_driver_sql(f"""
            UPDATE customer SET {', '.join(f"{c} = h.{c}" for c in holder_cols)}
            FROM {HOLDERS} h
            WHERE customer.id_number = h.id_number
              AND ({', '.join(f"customer.{c}" for c in holder_cols)})
                  IS DISTINCT FROM ({', '.join(f"h.{c}" for c in holder_cols)})""").rowcount
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {AFFECTED}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {AFFECTED} (id INTEGER)")
    windows = ("counts_from", "counts_until")
    columns = ("policy_no", *_COMPARED, *windows)
    first = _first_import(conn)
    report.first_import = first
    with _rebuilt_after(conn, report, first), report.phase("policies inserted"):
        guard = "" if first else "ON CONFLICT (policy_no) DO NOTHING"  # no unique index now
        inserted = conn.exec_driver_sql(f"""
            WITH ins AS (
                INSERT INTO policy (customer_id, {', '.join(columns)})
                SELECT c.id, {', '.join(f's.{col}' for col in columns)}
                FROM {STAGE} s JOIN customer c ON c.id_number = s.holder_id_number
                WHERE NOT EXISTS (SELECT 1 FROM policy p WHERE p.policy_no = s.policy_no)
                {guard}
                RETURNING customer_id),
            mark AS (INSERT INTO {AFFECTED} (id) SELECT DISTINCT customer_id FROM ins)
            SELECT count(*) FROM ins""").scalar_one()
    if first:  # every staged policy is new: nothing to update
        conn.exec_driver_sql("ANALYZE policy")  # for the tier run's plans
        updated = 0
    else:
        assign = ", ".join(f"{col} = s.{col}" for col in (*_COMPARED, *windows))
        changed = _differs("old", "s", "c")
        windows_differ = " OR ".join(f"old.{w} IS DISTINCT FROM s.{w}" for w in windows)
        with report.phase("policies updated"):
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
    with report.phase("customers flagged"):
        conn.exec_driver_sql(f"""
            UPDATE customer SET needs_recompute = true
            FROM (SELECT DISTINCT id FROM {AFFECTED}) a
            WHERE customer.id = a.id AND NOT customer.needs_recompute""")
        report.affected_customers.update(
            conn.exec_driver_sql(f"SELECT DISTINCT id FROM {AFFECTED}").scalars().all())
        conn.exec_driver_sql(f"DROP TABLE {AFFECTED}")
    if report.customers_inserted:
        conn.exec_driver_sql("ANALYZE customer")  # its new rows, for the tier run's plans
    report.inserted += inserted
    report.updated += updated
    report.unchanged += stage.rows - inserted - updated


def _first_import(conn: Connection) -> bool:
    """Whether the policy table is empty; if so it is locked (ACCESS EXCLUSIVE) for the rest
    of the transaction. False, with nothing locked, when it has rows or another session holds
    a lock on it (the import does not wait: it takes the ordinary path)."""
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql("LOCK TABLE policy IN ACCESS EXCLUSIVE MODE NOWAIT")
        empty = not conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM policy)").scalar()
    except OperationalError:  # LockNotAvailable: someone is reading or writing policies
        savepoint.rollback()
        return False
    if not empty:
        savepoint.rollback()  # releases the lock
        return False
    savepoint.commit()
    return True


@contextmanager
def _rebuilt_after(conn: Connection, report: ImportReport, rebuild: bool) -> Iterator[None]:
    """With `rebuild`: the policy table's indexes (but its primary key) and its unique and
    foreign-key constraints dropped for the block and built again after it, as they were
    (their definitions read from the catalog)."""
    if not rebuild:
        yield
        return
    constraints = conn.exec_driver_sql("""
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = 'policy'::regclass AND contype IN ('u', 'f')
        ORDER BY contype DESC, conname""").all()  # unique first: the foreign keys after
    indexes = conn.exec_driver_sql("""
        SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
          JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'policy'::regclass AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        ORDER BY c.relname""").all()
    for name, _ in constraints:
        conn.exec_driver_sql(f'ALTER TABLE policy DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    with report.phase("indexes rebuilt"):
        for _, definition in indexes:
            conn.exec_driver_sql(definition)
        for name, definition in constraints:
            conn.exec_driver_sql(f'ALTER TABLE policy ADD CONSTRAINT "{name}" {definition}')
