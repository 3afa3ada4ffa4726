"""The import's writers, one per kind: family members, bindings and institutions in
batches (one SELECT to tell new, changed and unchanged rows apart, then executemany), and the
tier-recompute flags a policy import sets."""
from __future__ import annotations


from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import (ARRAY, Connection, Engine, Table, any_, bindparam, insert, select, tuple_, update)

from bot.domain.identity import mask_id_number
from bot.domain import accounts
from bot.domain.staff_desk import audit_many
from bot.domain.tier_engine import recompute
from bot.domain.importer.cells import CUSTOMER_T, FAMILY_T, INSTITUTION_T, Values
from bot.domain.importer.report import ImportReport


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
