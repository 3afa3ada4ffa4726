"""Masks for personal data in every reply and log line."""
from __future__ import annotations



def _mask(s: str | None, head: int, tail: int, min_hidden: int) -> str:
    """Keep `head` and `tail` characters and star the rest; when that would hide fewer than
    `min_hidden` characters, star everything (a short or odd value never leaks)."""
    s = (s or "").strip()
    if len(s) < head + tail + min_hidden:
        return "*" * len(s)
    return s[:head] + "*" * (len(s) - head - tail) + s[len(s) - tail:]


def mask_id_number(s: str | None) -> str:
    """"11010519491231002X" -> "1101**********002X"."""
    return _mask(s, 4, 4, 6)


def mask_phone(s: str | None) -> str:
    """"13812345678" -> "138****5678"."""
    return _mask(s, 3, 4, 4)


def mask_policy_no(s: str | None) -> str:
    """"P2024000123" -> "P2*****0123"."""
    return _mask(s, 2, 4, 3)


def mask_name(s: str | None) -> str:
    """Keep the surname's first character: "张三丰" -> "张**"; a single character is starred."""
    return _mask(s, 1, 0, 1)
