"""Shared set-ups (fixtures, constants and helpers) first written for tests/domain/test_tiers.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from bot.domain.rules import load_rules
from bot.domain.tiers import effective_date
from tests.support import ROOT


RULES = load_rules(ROOT / "rules.toml")


DAY = timedelta(days=1)


E = date(2020, 1, 10)


@dataclass(frozen=True)
class P:
    """A policy with the attributes of models.Policy (defaults: counting from 2020-01-26)."""

    policy_no: str = "P1"
    payment_mode: str = "regular"
    annualized_basic_premium: Decimal = Decimal("50000.00")
    single_premium: Decimal = Decimal(0)
    annual_regular_topup: Decimal = Decimal(0)
    initial_lump_sum_topup: Decimal = Decimal(0)
    irregular_topup: Decimal = Decimal(0)
    effective_date: date = E
    payment_years: int = 5
    status: str = "in_force"
    cooling_off_end_date: date = date(2020, 1, 25)
    pledged: bool = False
    policy_loan: bool = False
