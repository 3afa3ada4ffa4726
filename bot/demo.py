"""Demo data for `make run`."""
from __future__ import annotations


def load_demo(settings, *, if_empty: bool = False) -> str:
    return "no demo data yet"
