"""Reads of a customer and their policies on the chat's hot paths (我的等级, every message of a
bound customer): prebuilt SQLAlchemy Core statements on the message's connection, no ORM.

The rows they return are read-only and have the attributes of `models.Customer` and
`models.Policy` (the tier rules read policies through `tiers.PolicyLike`). Writes go through
the ORM elsewhere; nothing here changes data.
"""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Row, bindparam, select

from models import Customer, Policy

CUSTOMER_T = Customer.__table__
POLICY_T = Policy.__table__

# Built once: SQLAlchemy caches a statement's compiled form, not the building of it.
_CUSTOMER = select(CUSTOMER_T).where(CUSTOMER_T.c.id == bindparam("customer_id"))
_POLICIES = (select(POLICY_T).where(POLICY_T.c.customer_id == bindparam("customer_id"))
             .order_by(POLICY_T.c.effective_date, POLICY_T.c.policy_no))


def customer(conn: Connection, customer_id: int) -> Row | None:
    """The customer `customer_id` (every column of `customer`), or None."""
    return conn.execute(_CUSTOMER, {"customer_id": customer_id}).first()


def policies(conn: Connection, customer_id: int) -> Sequence[Row]:
    """The customer's policies, by effective date then policy number."""
    return conn.execute(_POLICIES, {"customer_id": customer_id}).all()
