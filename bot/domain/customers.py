"""Reads of a customer and their policies on the chat's hot paths (我的等级, every message of a
bound customer): prebuilt SQLAlchemy Core statements on the message's connection, no ORM.

The rows they return are read-only and have the attributes of `models.Customer` and
`models.Policy` (the tier rules read policies through `tiers.PolicyLike`). Writes go through
the ORM elsewhere; nothing here changes data.
"""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Row, bindparam, select

from bot.infra.db import Prepared

from models import Customer, Policy

CUSTOMER_T = Customer.__table__
POLICY_T = Policy.__table__

# Built and compiled once (bot.infra.db.Prepared).
_CUSTOMER = Prepared(select(CUSTOMER_T).where(CUSTOMER_T.c.id == bindparam("customer_id")))
_POLICIES = Prepared(select(POLICY_T).where(POLICY_T.c.customer_id == bindparam("customer_id"))
                     .order_by(POLICY_T.c.effective_date, POLICY_T.c.policy_no))


def customer(conn: Connection, customer_id: int) -> Row | None:
    """The customer `customer_id` (every column of `customer`), or None."""
    return _CUSTOMER.first(conn, {"customer_id": customer_id})


def policies(conn: Connection, customer_id: int) -> Sequence[Row]:
    """The customer's policies, by effective date then policy number."""
    return _POLICIES.all(conn, {"customer_id": customer_id})
