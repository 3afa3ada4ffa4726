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
"""
from __future__ import annotations

import codecs
import csv
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import (ARRAY, Connection, Engine, Table, any_, bindparam, insert, select, text,
                        tuple_, update)
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

BATCH_ROWS = 2000
SHOWN_REJECTIONS = 50  # lines printed in the report
KEPT_REJECTIONS = 1000  # lines kept in memory (all are counted)
SCOPED_RECOMPUTE_MAX = 10_000  # more affected customers than this: recompute everyone

LIABILITIES = tuple(Liability)
PAYMENT_MODES = tuple(PaymentMode)
STATUSES = tuple(PolicyStatus)
RELATIONS = tuple(Relation)
INSTITUTION_KINDS = tuple(InstitutionKind)

CUSTOMER_T: Table = Customer.__table__
POLICY_T: Table = Policy.__table__
FAMILY_T: Table = FamilyMember.__table__
INSTITUTION_T: Table = Institution.__table__

Values = dict[str, Any]
Parser = Callable[[str], Any]  # a cell's text -> its value, or ValueError with a short reason
Field = tuple[str, int, Parser]  # column, cell index in the file's records, parser


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


# --- Field parsers: str -> value, or ValueError with a short reason -------------------------


def _show(v: str) -> str:
    """A non-personal cell value quoted for a message (cut short)."""
    return repr(v if len(v) <= 24 else v[:24] + "…")


def required_text(max_len: int) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if not v:
            raise ValueError("is empty")
        if len(v) > max_len:
            raise ValueError(f"is longer than {max_len} characters")
        return v
    return parse


def choice(options: tuple[str, ...], what: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v.lower() not in options:
            raise ValueError(f"unknown {what} {_show(v)} (expected {', '.join(options)})")
        return v.lower()
    return parse


_POLICY_NO = re.compile(r"\S{1,32}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YEARS = re.compile(r"[0-9]{1,3}")
_MONEY = re.compile(r"(-?)([0-9]{1,14}(?:\.[0-9]{1,2})?)")


def policy_no(v: str) -> str:
    if not _POLICY_NO.fullmatch(v):
        raise ValueError("must be 1-32 characters without spaces")
    return v


def id_number(v: str) -> str:
    if not v:
        raise ValueError("is empty")
    try:
        return validate_id_number(v)
    except ValueError as exc:
        raise ValueError(f"{exc} ({mask_id_number(v)})") from None


_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as WeChat's FromUserName (the door checks the same)


def openid(v: str) -> str:
    if not v:
        raise ValueError("is empty")
    if not _OPENID.fullmatch(v):
        raise ValueError("must be 1-64 letters, digits, - or _")
    return v


def phone(v: str) -> str:
    if not is_valid_phone(v):
        raise ValueError(f"not a mainland mobile number ({mask_phone(v)})" if v else "is empty")
    return v


def optional_phone(v: str) -> str:
    return phone(v) if v else ""


def money(v: str) -> Decimal:
    """CNY with at most 2 decimals, not negative; an empty cell is 0."""
    if not v:
        return Decimal("0.00")
    m = _MONEY.fullmatch(v)
    if not m:
        raise ValueError(f"not an amount with at most 2 decimals: {_show(v)}")
    amount = Decimal(m[2]).quantize(Decimal("0.01"))
    if m[1] and amount:
        raise ValueError(f"negative amount {_show(v)}")
    return amount


def iso_date(v: str) -> date:
    try:
        if _DATE.fullmatch(v):
            return date.fromisoformat(v)
    except ValueError:
        pass
    raise ValueError(f"not a date (YYYY-MM-DD): {_show(v)}")


def years(v: str) -> int:
    if not _YEARS.fullmatch(v) or int(v) < 1:
        raise ValueError(f"must be a whole number of years, 1 or more: {_show(v)}")
    return int(v)


FLAGS = {"1": True, "true": True, "是": True, "0": False, "false": False, "否": False}


def flag(v: str) -> bool:
    """0/1, true/false (any case) or 是/否."""
    value = FLAGS.get(v.strip().lower())
    if value is None:
        raise ValueError(f"must be 0 or 1 (or true/false, 是/否), not {_show(v)}")
    return value


def liabilities(v: str) -> str:
    """Semicolon-separated liabilities (may be empty), stored in a canonical order."""
    given = {p.strip().lower() for p in v.split(";") if p.strip()}
    unknown = sorted(given - set(LIABILITIES))
    if unknown:
        raise ValueError(f"unknown liability {_show(unknown[0])} "
                         f"(expected {', '.join(LIABILITIES)})")
    return ";".join(x for x in LIABILITIES if x in given)


# --- Remembered answers -----------------------------------------------------------------------

_MEMOS: list[dict] = []  # emptied after each import: nothing personal outlives it


def memo(parse: Parser, limit: int = 500_000) -> Parser:
    """`parse`, remembering its answers for the current import: amounts, dates, codes and
    holders' ID numbers repeat across a file's rows, and a lookup is cheaper than a parse."""
    known: dict[str, tuple[bool, Any]] = {}
    _MEMOS.append(known)

    def remembered(v: str) -> Any:
        hit = known.get(v)
        if hit is None:
            try:
                hit = (True, parse(v))
            except ValueError as exc:
                hit = (False, str(exc))
            if len(known) < limit:
                known[v] = hit
        if hit[0]:
            return hit[1]
        raise ValueError(hit[1])
    return remembered


def forget() -> None:
    for known in _MEMOS:
        known.clear()


_money, _date, _years, _flag = memo(money), memo(iso_date), memo(years), memo(flag)


# --- Row specifications ----------------------------------------------------------------------

POLICY_COLUMNS: dict[str, Parser] = {
    "policy_no": policy_no,
    "holder_id_number": memo(id_number),
    "holder_name": required_text(64),
    "holder_phone": phone,
    "product_name": memo(required_text(128)),
    "liabilities": memo(liabilities),
    "payment_mode": memo(choice(PAYMENT_MODES, "payment mode")),
    "annualized_basic_premium": _money,
    "single_premium": _money,
    "annual_regular_topup": _money,
    "initial_lump_sum_topup": _money,
    "irregular_topup": _money,
    "effective_date": _date,
    "payment_years": _years,
    "status": memo(choice(STATUSES, "status")),
    "cooling_off_end_date": _date,
    "pledged": _flag,
    "policy_loan": _flag,
}
HOLDER_FIELDS = ("holder_id_number", "holder_name", "holder_phone")
POLICY_FIELDS = tuple(c for c in POLICY_COLUMNS if c not in HOLDER_FIELDS)

FAMILY_COLUMNS: dict[str, Parser] = {
    "holder_id_number": id_number,
    "relation": choice(RELATIONS, "relation"),
    "name": required_text(64),
    "id_number": id_number,
    "phone": optional_phone,
}


BINDING_COLUMNS: dict[str, Parser] = {
    "openid": openid,
    "id_number": id_number,
}


def parse_row(fields: Iterable[Field], cells: list[str]) -> tuple[Values, list[str]]:
    """The values of the columns that parse, and a reason for each column that does not."""
    values: Values = {}
    errors: list[str] = []
    for name, i, parse in fields:
        try:
            values[name] = parse(cells[i].strip() if i is not None else "")
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    return values, errors


def not_self(values: Values) -> str | None:
    """A family member is someone other than the holder."""
    if values.get("id_number") and values["id_number"] == values.get("holder_id_number"):
        return "id_number: the holder cannot be their own family member"
    return None


# --- The report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    line: int | None  # None: the file as a whole
    reason: str

    def __str__(self) -> str:
        return self.reason if self.line is None else f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    kind: str
    path: Path
    skip_bad: bool = False
    rows: int = 0  # data rows read
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    customers_inserted: int = 0
    customers_updated: int = 0
    rejected: int = 0  # rejected rows, plus 1 for a file-level error
    rejections: list[Rejection] = field(default_factory=list)  # the first KEPT_REJECTIONS
    file_error: Rejection | None = None
    ignored_columns: list[str] = field(default_factory=list)
    written: bool = False
    affected_customers: set[int] = field(default_factory=set)
    tier_changes: str = ""
    seconds: float = 0.0

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < KEPT_REJECTIONS:
            self.rejections.append(Rejection(line, reason))

    def abort(self, line: int | None, reason: str) -> None:
        """A file-level error: nothing of the file is imported."""
        self.discard_counts()
        self.written = False
        self.file_error = Rejection(line, reason)
        self.rejected += 1

    def discard_counts(self) -> None:
        """The transaction was rolled back: nothing counted so far was written."""
        self.inserted = self.updated = self.unchanged = 0
        self.customers_inserted = self.customers_updated = 0
        self.affected_customers.clear()

    def render(self) -> str:
        head = (f"bind --file {self.path}" if self.kind == "bindings"
                else f"import {self.kind} from {self.path}")
        bad_rows = self.rejected - (self.file_error is not None)
        if self.file_error:
            lines = [f"{head}: the file cannot be imported", f"  {self.file_error}"]
        elif self.kind == "bindings":
            lines = [f"{head}: {self.rows} rows read in {self.seconds:.1f} s",
                     f"  bound      {self.inserted + self.updated}",
                     f"  unchanged  {self.unchanged} (already bound to that customer)",
                     f"  rejected   {bad_rows}"]
            if self.ignored_columns:
                lines.append(f"  ignored columns: {', '.join(self.ignored_columns)}")
        else:
            lines = [f"{head}: {self.rows} rows read in {self.seconds:.1f} s",
                     f"  inserted   {self.inserted}",
                     f"  updated    {self.updated}",
                     f"  unchanged  {self.unchanged}",
                     f"  rejected   {bad_rows}"]
            if self.kind == "policies":
                lines.append(f"  customers  {self.customers_inserted} new, "
                             f"{self.customers_updated} updated")
            if self.tier_changes:
                lines.append(f"  tier changes: {self.tier_changes}")
            if self.ignored_columns:
                lines.append(f"  ignored columns: {', '.join(self.ignored_columns)}")
        if self.rejections:
            lines.append("Rejected lines:")
            shown = sorted(self.rejections, key=lambda r: r.line or 0)[:SHOWN_REJECTIONS]
            lines += [f"  {r}" for r in shown]
            if bad_rows > SHOWN_REJECTIONS:
                lines.append(f"  ... and {bad_rows - SHOWN_REJECTIONS} more")
        if self.file_error:
            lines.append("Nothing was written.")
        elif not self.written and bad_rows:
            lines.append(f"Nothing was written. Fix the rejected lines, or run again with "
                         f"--skip-bad to {'bind' if self.kind == 'bindings' else 'import'} "
                         f"the {_rows(self.rows - bad_rows)} that are good.")
        return "\n".join(lines)


class FileError(Exception):
    """The file cannot be imported at all (line, reason)."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(line, reason)
        self.line, self.reason = line, reason


# --- Reading ------------------------------------------------------------------------------------


class _Lines:
    """The decoded lines of a binary file, counting lines and bytes; UTF-8 or a FileError."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.line = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self.fh:
            self.line += 1
            self.bytes += len(raw)
            if self.line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FileError(self.line, f"the file is not UTF-8 (byte 0x{raw[exc.start]:02x} "
                                           f"at byte {exc.start + 1} of the line); "
                                           f"save it as CSV UTF-8") from None
            yield decoded


def _records(lines: _Lines) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each non-blank CSV record."""
    reader = csv.reader(lines)
    start = 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                yield start, cells
            start = reader.line_num + 1
    except csv.Error as exc:
        raise FileError(lines.line, f"not readable as CSV: {exc}") from None


@dataclass(frozen=True)
class Layout:
    """Where a kind's columns sit in one file's records (read from its header)."""
    width: int  # cells in every record
    fields: tuple[Field, ...]
    ignored: tuple[str, ...]  # header names the import does not know


def read_header(cells: list[str], columns: dict[str, Parser],
                optional: tuple[str, ...] = ()) -> Layout:
    """The layout of the file whose header is `cells`, or a FileError on line 1. A column in
    `optional` may be left out (its cells then read as empty)."""
    names = [c.strip().lower() for c in cells]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise FileError(1, f"column {repeated[0]} appears more than once in the header")
    missing = [c for c in columns if c not in names and c not in optional]
    if missing:
        raise FileError(1, f"missing column(s) in the header: {', '.join(missing)}")
    return Layout(len(cells), tuple((c, names.index(c) if c in names else None, parse)
                                    for c, parse in columns.items()),
                  tuple(n for n in names if n and n not in columns))


# --- Writing ------------------------------------------------------------------------------------


@dataclass
class Synced:
    ids: dict[tuple, int]  # the row id of every key
    inserted: list[Values]
    updated: list[tuple[Any, Values]]  # (old row, new values)
    unchanged: int


def _where_key(conn: Connection, table: Table, key: tuple[str, ...], keys: list[tuple]):
    """`key IN keys`; on PostgreSQL a single column is matched with `= ANY(array)`, one
    parameter instead of thousands (which psycopg would parse anew on every batch)."""
    if len(key) > 1:
        return tuple_(*(table.c[k] for k in key)).in_(keys)
    column = table.c[key[0]]
    values = [k[0] for k in keys]
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("keys", values, type_=ARRAY(column.type)))
    return column.in_(values)


def sync_rows(conn: Connection, table: Table, key: tuple[str, ...], rows: list[Values], *,
              want_ids: bool = False) -> Synced:
    """Upsert `rows` (unique by `key`): insert the new ones, update those that differ in any
    of their columns, leave the rest alone. With `want_ids`, `ids` holds every row's id."""
    cols = list(rows[0])  # at least two: a key and a value
    values_of = itemgetter(*cols)
    key_at = [cols.index(k) + 1 for k in key]  # positions in a selected row (id first)
    keys = [tuple(r[k] for k in key) for r in rows]
    found = conn.execute(select(table.c.id, *(table.c[c] for c in cols))
                         .where(_where_key(conn, table, key, keys)))
    existing = {tuple(r[i] for i in key_at): r for r in found}
    new = [r for k, r in zip(keys, rows) if k not in existing]
    changed = [(existing[k], r) for k, r in zip(keys, rows)
               if k in existing and existing[k][1:] != values_of(r)]
    ids = {k: r.id for k, r in existing.items()}
    if new:
        # Plain executemany: psycopg prepares it once (INSERT … RETURNING would make
        # SQLAlchemy render one huge multi-VALUES statement per page instead).
        conn.execute(insert(table), new)
        if want_ids:
            new_keys = [k for k in keys if k not in existing]
            inserted = select(table.c.id, *(table.c[k] for k in key)).where(
                _where_key(conn, table, key, new_keys))
            ids.update((tuple(r[1:]), r.id) for r in conn.execute(inserted))
    if changed:
        stmt = (update(table).where(table.c.id == bindparam("b_id"))
                .values({c: bindparam(f"b_{c}") for c in cols if c not in key}))
        conn.execute(stmt, [{"b_id": old.id, **{f"b_{c}": new_[c] for c in cols if c not in key}}
                            for old, new_ in changed])
    return Synced(ids, new, changed, len(rows) - len(new) - len(changed))


def _customer_ids(conn: Connection, id_numbers: Iterable[str]) -> dict[str, int]:
    where = _where_key(conn, CUSTOMER_T, ("id_number",), [(n,) for n in id_numbers])
    return {r.id_number: r.id for r in conn.execute(select(CUSTOMER_T.c.id_number,
                                                            CUSTOMER_T.c.id).where(where))}


def mark_for_recompute(conn: Connection, customer_ids: set[int]) -> None:
    """Flag customers whose policies changed, in the import's own transaction: the tier run
    after the commit clears the flag, and if it never runs (a crash), the next import or the
    daily job still finds them."""
    if customer_ids:
        ids = CUSTOMER_T.c.id
        which = (ids == any_(bindparam("ids", sorted(customer_ids), type_=ARRAY(ids.type)))
                 if conn.dialect.name == "postgresql" else ids.in_(sorted(customer_ids)))
        conn.execute(update(CUSTOMER_T).where(which, ~CUSTOMER_T.c.needs_recompute)
                     .values(needs_recompute=True))


def marked_for_recompute(engine: Engine) -> set[int]:
    """Customers flagged by an import whose tier run has not happened (yet)."""
    with engine.connect() as conn:
        ids = set(conn.execute(select(CUSTOMER_T.c.id).where(CUSTOMER_T.c.needs_recompute))
                  .scalars())
        conn.rollback()
    return ids


def write_family(conn: Connection, batch: list[tuple[int, Values]], report: ImportReport,
                 *, dry: bool) -> None:
    """Reject rows whose holder is not a customer; upsert the rest unless `dry`."""
    holder_ids = _customer_ids(conn, {v["holder_id_number"] for _, v in batch})
    members = []
    for line, v in batch:
        holder = v["holder_id_number"]
        if holder in holder_ids:
            members.append({"customer_id": holder_ids[holder], "id_number": v["id_number"],
                            "relation": v["relation"], "name": v["name"], "phone": v["phone"]})
        else:
            report.reject(line, f"holder_id_number: no customer has this ID number "
                                f"({mask_id_number(holder)}); import their policies first")
    if members and not dry:
        _count(report, sync_rows(conn, FAMILY_T, ("customer_id", "id_number"), members))


BINDING_REFUSALS = {
    accounts.UNKNOWN_CUSTOMER: "id_number: no customer has this ID number ({masked}); "
                               "import their policies first",
    accounts.BOUND_ELSEWHERE: "id_number: the customer ({masked}) is bound to another openid; "
                              "unbind it first",
    accounts.OPENID_TAKEN: "openid: bound to another customer; unbind it first",
}


def write_bindings(conn: Connection, batch: list[tuple[int, Values]], report: ImportReport,
                   *, dry: bool, tz=None, actor: str = "cli") -> None:
    """Bind each row's openid to the customer with its ID number (`accounts.bind_many`, the
    rules of the single `bind`); reject the rows it refuses. Checked even when `dry`. Each
    binding written is audited (`actor` binds, in the transaction of the import)."""
    now = datetime.now(tz)
    changes: list = []
    outcomes = accounts.bind_many(conn, [(v["openid"], v["id_number"]) for _, v in batch],
                                  now, write=not dry, changes=changes)
    audit_many(conn, actor, "bind", [(o, {"customer_id": old}, {"customer_id": new})
                                     for o, old, new in changes], now)
    for (line, v), outcome in zip(batch, outcomes):
        if outcome == accounts.BOUND_NEW:
            report.inserted += 1
        elif outcome == accounts.BOUND:
            report.updated += 1
        elif outcome == accounts.UNCHANGED:
            report.unchanged += 1
        else:
            report.reject(line, BINDING_REFUSALS[outcome].format(
                masked=mask_id_number(v["id_number"])))


def _count(report: ImportReport, synced: Synced) -> None:
    report.inserted += len(synced.inserted)
    report.updated += len(synced.updated)
    report.unchanged += synced.unchanged


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


# --- Institutions ----------------------------------------------------------------------------

_INSTITUTION_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LANDLINE = re.compile(r"[0-9][0-9 ()+-]{4,30}")


def institution_code(v: str) -> str:
    if not _INSTITUTION_CODE.fullmatch(v):
        raise ValueError("must be 1-32 letters, digits, - or _")
    return v


def institution_phone(v: str) -> str:
    """A landline or mobile number (institutions' numbers are public: shown as typed)."""
    if not _LANDLINE.fullmatch(v):
        raise ValueError(f"not a phone number: {_show(v)}" if v else "is empty")
    return v


def service_codes(known: tuple[str, ...]) -> Parser:
    """;-separated service codes from rules.toml's bookable services, stored in its order."""
    def parse(v: str) -> str:
        given = [p.strip().lower() for p in v.split(";") if p.strip()]
        if not given:
            raise ValueError("is empty (expected one or more of " + ", ".join(known) + ")")
        unknown = [g for g in given if g not in known]
        if unknown:
            raise ValueError(f"unknown service {_show(unknown[0])} (expected {', '.join(known)})")
        return ";".join(k for k in known if k in given)
    return parse


def closed_days(v: str) -> tuple[str, str]:
    """;-separated weekdays (mon…sun) and dates (YYYY-MM-DD): (weekdays, dates), canonical."""
    weekdays, dates = set(), set()
    for part in (p.strip().lower() for p in v.split(";") if p.strip()):
        if part in WEEKDAYS:
            weekdays.add(part)
        else:
            try:
                dates.add(iso_date(part))
            except ValueError:
                raise ValueError(f"not a weekday (mon…sun) nor a date (YYYY-MM-DD): "
                                 f"{_show(part)}") from None
    return (";".join(w for w in WEEKDAYS if w in weekdays),
            ";".join(d.isoformat() for d in sorted(dates)))


def institution_columns(services: tuple[str, ...]) -> dict[str, Parser]:
    return {"code": institution_code, "name": required_text(128), "city": required_text(32),
            "address": required_text(256), "kind": choice(INSTITUTION_KINDS, "kind"),
            "services": service_codes(services), "phone": institution_phone,
            "closed": closed_days}


def write_institutions(conn: Connection, batch: list[tuple[int, Values]], report: ImportReport,
                       *, dry: bool) -> None:
    if dry:
        return
    rows = []
    for _, v in batch:
        row = {k: v[k] for k in ("code", "name", "city", "address", "kind", "services", "phone")}
        row["closed_weekdays"], row["closed_dates"] = v["closed"]
        rows.append(row)
    _count(report, sync_rows(conn, INSTITUTION_T, ("code",), rows))


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
# takes no lock on it). Nothing of the bot's tables is touched until the whole file is checked;
# then the holders and the policies are written set-based from the scratch table:
# - PostgreSQL: in one transaction with the staging (all or nothing, even on a crash);
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
        self._buffer: list[tuple] = []
        self._copy_cm = None
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
            self._copy.write_row(row)
            return
        self._buffer.append(tuple(x.isoformat() if isinstance(x, date) else
                                  int(x) if isinstance(x, bool) else x for x in row))
        if len(self._buffer) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
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
        if self.pg:
            cm, self._copy_cm = self._copy_cm, None
            cm.__exit__(None, None, None)
            self._cursor.close()
        else:
            self.flush()
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
            for line, cells in records:
                report.rows += 1
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


def _write_staged(conn: Connection, stage: _Stage, report: ImportReport, pg: bool) -> None:
    if pg:  # one transaction, one statement each
        _write_holders(conn, 1, stage.holders, report)
        _write_policies(conn, 0, 2**31 - 1, stage.rows, report)
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
