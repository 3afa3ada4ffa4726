"""我的等级 and 我的权益: the tier a customer holds, how it was computed, what it gives."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from bot.conversation import Context, Reply, Router
from bot.domain import booking_store, customers
from bot.domain.rules import Tier
from bot.domain.tiers import explanation
from bot.domain.entitlements import refusal
from menus import INTENT_LABEL, SERVICE_OF, VOCABULARY, Key
from models import Customer

router = Router(VOCABULARY)


def quota_used(ctx: Context, customer: Customer, service_code: str) -> int:
    """Uses of a yearly quota this calendar year (bookings whose service date is this year:
    submitted, confirmed, completed, missed or cancelled late; a free cancellation gives the
    use back)."""
    return booking_store.quota_used(ctx.conn, customer.id, service_code, ctx.today.year)


def held_tier(ctx: Context, customer: Customer) -> Tier:
    """The tier the customer holds (an unknown stored code counts as the lowest)."""
    rules = ctx.services.rules
    return rules.tier(customer.tier) if rules.has_tier(customer.tier) else rules.lowest


def with_service(service_code: str):
    """Serve the key only to a bound customer whose held tier gives `service_code`; an
    unbound user is led into binding, and another tier is told who has it and what they
    do have."""
    def deco(handler: Callable[[Context, Customer, Tier], Reply]) -> Callable[[Context], Reply]:
        @wraps(handler)
        def wrapper(ctx: Context) -> Reply:
            customer = ctx.customer  # a personal key: the router checked it
            tier = held_tier(ctx, customer)
            why = refusal(ctx.services.rules, tier, service_code)
            if why is not None:
                return ctx.say("entitlement/refused", why=why)
            return handler(ctx, customer, tier)
        return wrapper
    return deco


# Always shown in help: what anyone may do.
_OPEN = (Key.FAQ, Key.FESTIVAL, Key.HUMAN)


def capabilities(ctx: Context) -> dict:
    """What this user can do, from what the router serves and the tier they hold: help and
    the welcome list only this, so they never promise what the bot cannot do."""
    served = ctx.router.keys
    customer = ctx.customer
    tier = held_tier(ctx, customer) if customer is not None else None
    rules = ctx.services.rules
    can = []
    if customer is not None:
        can += [k for k in (Key.MY_TIER, Key.MY_BENEFITS) if k in served]
        services = [k for k, code in SERVICE_OF.items()
                    if k in served and refusal(rules, tier, code) is None]
        can += services
        if any(rules.service(SERVICE_OF[k]).per_year for k in services):
            can += [k for k in (Key.MY_BOOKINGS, Key.CANCEL_BOOKING) if k in served]
        can.append(Key.UNBIND)
    else:
        can.append(Key.BIND)
    can += [k for k in _OPEN if k in served]
    return {"can": [INTENT_LABEL[k] for k in can], "bound": customer is not None,
            "tier": tier, "staff": ctx.staff is not None}


def with_held_tier(handler: Callable[[Context, Customer, Tier], Reply]) -> Callable[[Context], Reply]:
    """Call `handler` with the bound customer and the tier they hold (an unknown stored code
    is the lowest); an unbound user is led into binding instead."""
    @wraps(handler)
    def wrapper(ctx: Context) -> Reply:
        customer = ctx.customer  # a personal key: the router checked it
        return handler(ctx, customer, held_tier(ctx, customer))
    return wrapper


@router.key(Key.MY_TIER)
@with_held_tier
def my_tier(ctx: Context, customer: Customer, held: Tier) -> Reply:
    policies = customers.policies(ctx.conn, customer.id)
    return ctx.say("tier/my_tier", customer=customer,
                   **explanation(policies, ctx.today, ctx.services.rules, held))


@router.key(Key.MY_BENEFITS)
@with_held_tier
def my_benefits(ctx: Context, customer: Customer, tier: Tier) -> Reply:
    rules = ctx.services.rules
    services = []
    for service in rules.services_for(tier.code):
        used = quota_used(ctx, customer, service.code) if service.per_year else 0
        services.append({"service": service, "used": used,
                         "left": max(service.per_year - used, 0) if service.per_year else None,
                         "packages": service.packages_for(tier.code)})
    above = rules.next_tier(tier.code)
    mine = {s.code for s in rules.services_for(tier.code)}
    extra = [s for s in rules.services_for(above.code) if s.code not in mine] if above else []
    offered = {s.code for s in rules.services_for(tier.code)}
    left = {s["service"].code: s["left"] for s in services}
    bookable = [(INTENT_LABEL[k], left.get(code)) for k, code in SERVICE_OF.items()
                if code in offered and rules.service(code).per_year and k in ctx.router.keys]
    return ctx.say("tier/benefits", tier=tier, basic=rules.basic_services_for(tier.code),
                   services=services, year=ctx.today.year, above=above, extra=extra,
                   bookable=[name for name, n in bookable if n != 0],
                   spent=[name for name, n in bookable if n == 0],
                   advisor="health_advisor" in offered, festival_months=rules.festival.months)
