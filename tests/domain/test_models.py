"""Money is exact to the fen on every database (SQLite has no exact NUMERIC)."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.exc import StatementError
from sqlmodel import Session

from bot.infra.db import make_engine
from models import Customer
from tests.support import factories


@pytest.mark.parametrize("amount", ["0.01", "0.10", "29999.99", "300000.00",
                                    "98765432109876.43", "-0.07"])
def test_money_round_trips_exactly(db_url, amount):
    engine = make_engine(db_url)
    with Session(engine, expire_on_commit=False) as s:
        c = factories.customer(s, contribution=Decimal(amount))
        s.commit()
    with Session(engine) as s:
        back = s.get(Customer, c.id).contribution
    engine.dispose()
    assert back == Decimal(amount) and str(back) == str(Decimal(amount).quantize(Decimal("0.01")))


def test_fractions_of_a_fen_are_refused(db_url):
    engine = make_engine(db_url)
    with Session(engine) as s, pytest.raises(StatementError):
        factories.customer(s, contribution=Decimal("0.001"))
    engine.dispose()
