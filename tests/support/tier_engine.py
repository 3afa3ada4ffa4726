"""Shared set-ups (fixtures, constants and helpers) first written for tests/domain/test_tier_engine.py."""
from __future__ import annotations

from dataclasses import asdict, replace
from datetime import date, timedelta
from decimal import Decimal
from itertools import count

from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from models import Customer, Notification, Policy, TierHistory, WechatUser
from tests.support.tiers import P


customer_t, policy_t = Customer.__table__, Policy.__table__


history_t, notification_t = TierHistory.__table__, Notification.__table__


user_t = WechatUser.__table__


class Book:
    """Customers and policies written straight into the database."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.numbers = count(1)

    def customer(self, *policies: P, tier: str = "mass", bound: bool = True,
                 following: bool = True, evaluated: date | None = None) -> int:
        """A customer whose WeChat account is bound and following (unless told otherwise),
        last evaluated on `evaluated` (None: never). Tier-change notices are queued only
        for bound, following customers, and not on their first evaluation."""
        n = next(self.numbers)
        with self.engine.begin() as c:
            cid = c.execute(insert(customer_t).values(
                id_number=f"{n:018d}", name=f"客户{n}", phone="13800000000",
                sex="M", birth_date=date(1980, 1, 1), tier=tier,
                evaluated_on=evaluated)).inserted_primary_key[0]
            if bound:
                c.execute(insert(user_t).values(openid=f"o_tier_{cid}", following=following,
                                                 customer_id=cid, bind_failures=0))
            for p in policies:
                c.execute(insert(policy_t).values(
                    customer_id=cid, product_name="产品", **asdict(replace(
                        p, policy_no=f"{p.policy_no}-{cid}-{next(self.numbers)}"))))
        return cid

    def set_policies(self, cid: int, **values) -> None:
        with self.engine.begin() as c:
            c.execute(update(policy_t).where(policy_t.c.customer_id == cid).values(**values))

    def get(self, cid: int):
        with self.engine.connect() as c:
            return c.execute(select(customer_t).where(customer_t.c.id == cid)).one()

    def rows(self, table, cid: int | None = None) -> list:
        query = select(table).order_by(table.c.id)
        if cid is not None:
            query = query.where(table.c.customer_id == cid)
        with self.engine.connect() as c:
            return c.execute(query).all()

    def snapshot(self) -> tuple:
        return tuple(tuple(self.rows(t)) for t in (customer_t, history_t, notification_t))

    def clear(self) -> None:
        with self.engine.begin() as c:
            for table in (notification_t, history_t, policy_t, user_t, customer_t):
                c.execute(delete(table))


SINGLE = P(payment_mode="single", payment_years=10, annualized_basic_premium=Decimal(0),
           single_premium=Decimal("300000.00"))


money = st.one_of(st.just(Decimal("0.00")),
                  st.integers(0, 150_000_000).map(lambda fen: Decimal(fen).scaleb(-2)))


some_date = st.one_of(st.dates(date(2004, 1, 1), date(2032, 12, 31)),
                      st.sampled_from([date(2008, 2, 29), date(2016, 2, 29), date(2020, 2, 29),
                                       date(2024, 2, 29), date(2021, 2, 28), date(2021, 3, 1)]))


rarely = st.sampled_from([False, False, False, False, True])


@st.composite
def policies(draw) -> P:
    effective = draw(some_date)
    return P(payment_mode=draw(st.sampled_from(["regular", "regular", "single"])),
             annualized_basic_premium=draw(money), single_premium=draw(money),
             annual_regular_topup=draw(money), initial_lump_sum_topup=draw(money),
             irregular_topup=draw(money), effective_date=effective,
             payment_years=draw(st.integers(0, 25)),
             status=draw(st.sampled_from(["in_force"] * 4 + ["lapsed", "surrendered",
                                                              "terminated", "matured"])),
             cooling_off_end_date=effective + timedelta(days=draw(st.integers(-5, 30))),
             pledged=draw(rarely), policy_loan=draw(rarely))
