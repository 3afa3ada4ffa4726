"""Test data: customers and policies written straight to the database under test."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import count

from sqlmodel import Session

from bot.domain.identity import id_birth_date, id_sex, make_id_number
from models import Customer, FamilyMember, Policy

_seq = count(100)


def _next_id(birth: date, sex: str) -> str:
    """A fresh valid ID number: 500 people per sex, birth date and district, then the next
    district."""
    n = next(_seq)
    return make_id_number(f"{110105 + n // 500}", birth, n % 500, sex)


def customer(session: Session, name: str = "张三", phone: str = "13812345678",
             birth: date = date(1980, 5, 17), sex: str = "M", tier: str = "mass",
             **kw) -> Customer:
    number = kw.pop("id_number", None) or _next_id(birth, sex)
    c = Customer(id_number=number, name=name, phone=phone, sex=id_sex(number),
                 birth_date=id_birth_date(number), tier=tier, **kw)
    session.add(c)
    session.flush()
    return c


def policy(session: Session, holder: Customer, policy_no: str, *,
           premium: str = "0", single: str = "0", effective: date = date(2024, 1, 10),
           years: int = 10, status: str = "in_force", mode: str = "regular",
           cooling_off_end: date | None = None, liabilities: str = "hospitalization",
           **kw) -> Policy:
    p = Policy(policy_no=policy_no, customer_id=holder.id, product_name="安盛终身寿险",
               liabilities=liabilities, payment_mode=mode,
               annualized_basic_premium=Decimal(premium), single_premium=Decimal(single),
               effective_date=effective, payment_years=years, status=status,
               cooling_off_end_date=cooling_off_end or date(effective.year, effective.month,
                                                            min(effective.day + 15, 28)),
               **kw)
    session.add(p)
    session.flush()
    return p


def family(session: Session, holder: Customer, relation: str, name: str, birth: date,
           sex: str, phone: str = "") -> FamilyMember:
    n = next(_seq)  # 500 members per birth date and district, then the next district
    m = FamilyMember(customer_id=holder.id, relation=relation, name=name, phone=phone,
                     id_number=make_id_number(f"{310101 + n // 500}", birth, n % 500, sex))
    session.add(m)
    session.flush()
    return m
