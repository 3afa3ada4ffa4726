"""The policy import's fast path: a record whose cells are all in canonical form (what an
export writes: `2024-01-31`, `1234.50`, `0`/`1`, the lower-case codes, liabilities in
`LIABILITIES` order, no surrounding blanks) is checked with one regular expression and a few
remembered lookups, and goes to PostgreSQL's COPY as the text it already is.

It accepts a subset of what the cell parsers of `cells` accept, with the same values: a
record it does not accept (anything unusual, and every bad row) is checked by the parsers,
which give the reasons. `tests/test_import_canonical.py` holds the two paths equal.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from itertools import combinations
from operator import itemgetter

from bot.domain.importer.cells import LIABILITIES, PAYMENT_MODES, POLICY_COLUMNS, STATUSES

SEP = "\x1f"  # joins a record's cells for the one match (a cell holding it is not canonical)

_TEXT_END = r"[^\s\\\x00\x1f]"  # no blank at either end (the parsers strip); no COPY escape


def _text(max_len: int) -> str:
    middle = r"[^\t\n\r\\\x00\x1f]"
    return f"{_TEXT_END}(?:{middle}{{0,{max_len - 2}}}{_TEXT_END})?"


def _alternatives(options) -> str:
    return "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True))


_LIABILITY_LISTS = [";".join(c) for n in range(len(LIABILITIES), 0, -1)
                    for c in combinations(LIABILITIES, n)]  # in canonical order
_MONEY = r"(?:[0-9]{1,14}(?:\.[0-9]{1,2})?)?"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_FLAG = r"[01]"

PATTERNS: dict[str, str] = {
    "policy_no": r"[^\s\\\x00\x1f]{1,32}",
    "holder_id_number": r"[0-9]{17}[0-9X]",
    "holder_name": _text(64),
    "holder_phone": r"1[3-9][0-9]{9}",
    "product_name": _text(128),
    "liabilities": f"(?:{_alternatives(_LIABILITY_LISTS)})?",
    "payment_mode": _alternatives(PAYMENT_MODES),
    "annualized_basic_premium": _MONEY,
    "single_premium": _MONEY,
    "annual_regular_topup": _MONEY,
    "initial_lump_sum_topup": _MONEY,
    "irregular_topup": _MONEY,
    "effective_date": _DATE,
    "payment_years": r"[1-9][0-9]{0,2}",
    "status": _alternatives(STATUSES),
    "cooling_off_end_date": _DATE,
    "pledged": _FLAG,
    "policy_loan": _FLAG,
}
assert list(PATTERNS) == list(POLICY_COLUMNS), "one pattern per policy column, in order"

ROW = re.compile(SEP.join(f"({p})" for p in PATTERNS.values()))


def cents(v: str) -> str:
    """A canonical amount's text -> its cents' text ('' is 0)."""
    return str(int(Decimal(v or "0").scaleb(2)))


class Canonical:
    """The fast path for one file's layout: `cells(record)` -> the canonical cells in
    POLICY_COLUMNS order, or None (then the parsers decide)."""

    def __init__(self, width: int, indexes: list[int | None]) -> None:
        self.width = width
        self.usable = None not in indexes
        self.pick: Callable = itemgetter(*indexes) if self.usable else None

    def cells(self, record: list[str]) -> tuple[str, ...] | None:
        if not self.usable or len(record) != self.width:
            return None
        # No pattern matches the separator, so a cell holding it fails the whole match.
        m = ROW.fullmatch(SEP.join(self.pick(record)))
        return m.groups() if m else None
