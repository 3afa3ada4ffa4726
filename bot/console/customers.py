"""Customers: search by phone, policy number or booking number (`staff_desk.lookup`, as
#查询), a masked summary with the tier and its computation (as 我的等级 explains it), this
year's quota use, bookings, family members, the bound WeChat account and the last contact.
An admin may reveal one field of one customer, with a reason; the reveal is audited."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlmodel import Session

from bot.console import deps
from bot.console.bookings import RELATION_NAMES, STATUS_NAMES
from bot.console.deps import StaffMember, require_staff
from bot.console.web import page, said, wording
from bot.domain import customers as customer_data
from bot.domain import staff_desk as desk
from bot.domain.tiers import explanation
from bot.infra.privacy import mask_id_number, mask_name, mask_phone, mask_policy_no
from bot.infra.texts import render
from models import Booking, Customer, FamilyMember, Policy, WechatUser

router = APIRouter(prefix="/admin")

FIELDS = wording().fields  # what an admin may reveal, by name (console/names.html)


def _tier_text(session: Session, customer: Customer, rules, today) -> str:
    """What 我的等级 tells the customer: the same template, with the same facts."""
    policies = customer_data.policies(session.connection(), customer.id)
    return render("tier/my_tier", customer=customer,
                  **explanation(policies, today, rules, rules.tier(customer.tier)))


def _summary(request: Request, session: Session, c: Customer, revealed: dict) -> dict:
    svc = deps.services(request)
    rules = svc.rules
    today = svc.now().date()
    found = desk.lookup(session, c.phone, today, rules) if c.phone else None
    if found is None or found.customer.id != c.id:
        found = None
    quotas = found.quotas if found else []
    policies = session.execute(select(Policy).where(Policy.customer_id == c.id)
                               .order_by(Policy.effective_date)).scalars().all()
    family = session.execute(select(FamilyMember).where(FamilyMember.customer_id == c.id)
                             .order_by(FamilyMember.id)).scalars().all()
    names = {s.code: s.name for s in rules.services}
    booked = session.execute(select(Booking).where(Booking.customer_id == c.id)
                             .order_by(Booking.id.desc()).limit(50)).scalars().all()
    user = session.execute(select(WechatUser).where(WechatUser.customer_id == c.id)).scalars().first()
    try:
        tier_text = _tier_text(session, c, rules, today)
    except Exception:  # a tier the rules no longer know: the summary still shows
        tier_text = ""
    show = lambda field, value, mask: value if field in revealed else mask(value)  # noqa: E731
    return dict(
        c=c, name=show("name", c.name, mask_name), phone=show("phone", c.phone, mask_phone),
        id_number=show("id_number", c.id_number, mask_id_number),
        tier=rules.tier(c.tier).name if rules.has_tier(c.tier) else c.tier,
        contribution=c.contribution, tier_text=tier_text, quotas=quotas, year=today.year,
        policies=[dict(no=show("policies", p.policy_no, mask_policy_no), product=p.product_name,
                       status=p.status, effective=p.effective_date) for p in policies],
        family=[dict(name=mask_name(m.name), relation=RELATION_NAMES.get(m.relation, m.relation),
                     id_number=mask_id_number(m.id_number)) for m in family],
        bookings=[dict(number=b.number, service=names.get(b.service, b.service),
                       day=b.confirmed_date or b.preferred_date,
                       status=STATUS_NAMES.get(b.status, b.status)) for b in booked],
        wechat=dict(openid=user.openid[:6] + "…", following=user.following,
                    bound_at=user.bound_at) if user else None,
        last_contact=found.last_contact if found else (user.last_seen_at if user else None),
        fields=FIELDS, revealed=revealed)


def _find(session: Session, key: str, request: Request) -> list[Customer]:
    key = key.strip()
    if not key:
        return []
    if desk.BOOKING_NO.fullmatch(key) or not desk.PHONE.fullmatch(key):
        found = desk.lookup(session, key, deps.services(request).now().date(),
                            deps.services(request).rules)
        return [found.customer] if found else []
    return list(session.execute(select(Customer).where(Customer.phone == key)
                                .order_by(Customer.id).limit(20)).scalars().all())


@router.get("/customers")
def search(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    key = request.query_params.get("q", "")[:40]
    svc = deps.services(request)
    with Session(svc.engine) as session:
        matches = _find(session, key, request)
        one = _summary(request, session, matches[0], {}) if len(matches) == 1 else None
        many = [dict(id=c.id, name=mask_name(c.name), phone=mask_phone(c.phone))
                for c in matches] if len(matches) > 1 else []
    return page(request, "customers.html", q=key, one=one, many=many,
                searched=bool(key.strip()))


@router.get("/customers/{customer_id}")
def show(request: Request, customer_id: int, me: StaffMember = Depends(require_staff())
         ) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        c = session.get(Customer, customer_id)
        one = _summary(request, session, c, {}) if c else None
    if one is None:
        return page(request, "not_found.html", status_code=404, what=said("a_customer"))
    return page(request, "customers.html", q="", one=one, many=[], searched=False)


@router.post("/customers/{customer_id}/reveal")
def reveal(request: Request, customer_id: int, field: str = Form(""), reason: str = Form(""),
           me: StaffMember = Depends(require_staff("admin"))) -> Response:
    """One field of one customer shown in full to an admin, with the reason, audited."""
    svc = deps.services(request)
    reason = reason.strip()[:200]
    with Session(svc.engine, expire_on_commit=False) as session:
        c = session.get(Customer, customer_id)
        if c is None:
            session.rollback()
            return page(request, "not_found.html", status_code=404, what=said("a_customer"))
        if field not in FIELDS or len(reason) < 2:
            one = _summary(request, session, c, {})
            session.rollback()
            return page(request, "customers.html", status_code=400, q="", one=one, many=[],
                        searched=False, error=said("reveal_choose"))
        desk.audit(session, me.openid, "reveal", f"customer:{c.id}", svc.now(),
                   after={"field": field, "reason": reason})
        one = _summary(request, session, c, {field: True})
        session.commit()
    return page(request, "customers.html", q="", one=one, many=[], searched=False,
                notice=said("revealed", field=FIELDS[field]))
