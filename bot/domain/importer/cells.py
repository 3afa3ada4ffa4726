"""The import's cell parsers (a cell's text -> its value, or ValueError with a short
reason) and row specifications: which columns each kind of file has, and how each is read."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, text

from bot.domain.identity import is_valid_phone, mask_id_number, mask_phone, validate_id_number
from bot.domain.vocab import WEEKDAYS, InstitutionKind, Liability, PaymentMode, PolicyStatus, Relation
from models import Customer, FamilyMember, Institution, Policy


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
