"""Template-message field values, fitted to WeChat's rules (in force since May 2023: no
`first`/`remark` keys, no colours). A field's type is its key without the trailing number
(`thing3` is a thing). Every function shortens or reformats; none ever refuses a value.

| type | rule |
|---|---|
| thing | at most 20 characters |
| character_string | at most 32 characters: digits, letters, symbols, no Chinese |
| number | at most 32 characters: digits, with at most one decimal point |
| letter | at most 32 letters |
| symbol | at most 5 symbols |
| amount | one currency sign + at most 10 digits (decimals allowed), optionally ending in 元 |
| phone_number | at most 17 characters: digits and symbols |
| car_number | at most 8 characters: the first and last may be Chinese, the rest letters/digits |
| name | at most 10 Chinese characters, or at most 20 letters (mixed counts as Chinese) |
| phrase | at most 5 Chinese characters |
| time | 24-hour time, optionally with the date: `15:01`, `2019年10月1日 15:01` |
| date | date, optionally with the time: `2019年10月1日`, `2019年10月1日 15:01` |
"""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from bot.infra.texts import local

ELLIPSIS = "…"
_CJK = re.compile(r"[\u3400-\u9fff]")
_TYPE = re.compile(r"^([a-z_]+?)\d*$")


def field_type(key: str) -> str:
    m = _TYPE.match(key)
    return m.group(1) if m else key


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, an ellipsis marking a cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def thing(value) -> str:
    return cut(str(value), 20) or "-"


def character_string(value) -> str:
    text = "".join(ch for ch in str(value) if ch.isascii() and ch.isprintable())
    return text.strip()[:32] or "-"


def number(value) -> str:
    text = str(value)
    m = re.search(r"-?\d+(\.\d+)?", text.replace(",", ""))
    out = m.group(0) if m else "0"
    if len(out) > 32:
        whole, _, frac = out.partition(".")
        out = whole[:32] if len(whole) >= 31 else f"{whole}.{frac}"[:32].rstrip(".")
    return out


def letter(value) -> str:
    return ("".join(ch for ch in str(value) if ch.isascii() and ch.isalpha()) or "x")[:32]


def symbol(value) -> str:
    out = "".join(ch for ch in str(value) if not ch.isalnum() and not ch.isspace()
                  and not _CJK.match(ch))
    return out[:5] or "-"


def amount(value) -> str:
    try:
        money = Decimal(str(value).replace("¥", "").replace("元", "").replace(",", "").strip())
    except InvalidOperation:
        money = Decimal(0)
    digits = f"{money:.2f}"
    if len(digits.replace(".", "").lstrip("-")) > 10:
        digits = f"{money:.0f}"[:10]
    return "¥" + digits


def phone_number(value) -> str:
    out = "".join(ch for ch in str(value) if ch.isdigit() or ch in "+-() ")
    return out.strip()[:17] or "-"


def car_number(value) -> str:
    text = "".join(ch for ch in str(value) if ch.isalnum())
    if len(text) <= 8:
        return text or "-"
    return text[:7] + text[-1]


def name(value) -> str:
    text = str(value).strip()
    if _CJK.search(text):
        return "".join(ch for ch in text if _CJK.match(ch) or ch == "·")[:10] or "-"
    letters = "".join(ch for ch in text if ch.isascii() and (ch.isalpha() or ch in " .-·"))
    return letters.strip()[:20] or "-"


def phrase(value) -> str:
    return "".join(_CJK.findall(str(value)))[:5] or "通知"


def _when(value, with_time: bool) -> str:
    if isinstance(value, datetime):
        value = local(value)  # an instant is shown in TIMEZONE
        d = f"{value.year}年{value.month}月{value.day}日"
        return f"{d} {value:%H:%M}" if with_time else d
    if isinstance(value, date):
        return f"{value.year}年{value.month}月{value.day}日"
    text = str(value).strip()
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2}))?.*", text)
    if m:
        y, mo, d, hh, mm = m.groups()
        out = f"{int(y)}年{int(mo)}月{int(d)}日"
        return f"{out} {int(hh):02d}:{mm}" if hh else out
    return text


def time_(value) -> str:
    if isinstance(value, str) and re.fullmatch(r"\d{1,2}:\d{2}", value.strip()):
        hh, mm = value.strip().split(":")
        return f"{int(hh):02d}:{mm}"
    return _when(value, True)


def date_(value) -> str:
    return _when(value, isinstance(value, datetime))


FITTERS = {"thing": thing, "character_string": character_string, "number": number,
           "letter": letter, "symbol": symbol, "amount": amount, "phone_number": phone_number,
           "car_number": car_number, "name": name, "phrase": phrase, "time": time_,
           "date": date_}


def fit(key: str, value) -> str:
    """`value` for the template field `key`, fitted to the rules of its type."""
    fitter = FITTERS.get(field_type(key))
    return fitter(value) if fitter else cut(str(value), 20)


def template_data(values: dict[str, object]) -> dict[str, dict[str, str]]:
    """WeChat's `data` object: {"thing1": {"value": "…"}, …}, each value fitted."""
    return {key: {"value": fit(key, value)} for key, value in values.items()}
