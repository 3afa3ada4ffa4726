"""我的等级 and 我的权益: the tier a customer holds, how it was computed, what it gives."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from bot.conversation import Context, Reply, Router
from bot.domain import booking_store, customers
from bot.domain.booking_draft import BookingDraft
from bot.domain.bookings import calendar, quota_years
from bot.domain.rules import Service, Tier
from bot.domain.tiers import explanation
from bot.domain.entitlements import refusal
from menus import INTENT_LABEL, SERVICE_OF, VOCABULARY, Key
from models import Customer

router = Router(VOCABULARY)


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


def quota_by_year(draft: BookingDraft, service: Service) -> dict:
    """A yearly quota as the booking counts and checks it (`BookingDraft.spent_years`, over
    the same counted uses): this year's uses and what is left, then each later year a
    booking made now may fall in (the 90-day window reaches it) or whose uses are already
    being spent, and which of those years are spent and which still bookable."""
    d = draft.but(service=service.code)
    spent, spare = d.spent_years()
    used = dict(d.facts(d.request(date=None)).used)
    after = d.today.year + 1
    if after not in used:  # beyond the window: shown only when already being spent
        used[after] = d.known.used([after]).get(service.code, {}).get(after, 0)
    years = [y for y in sorted(used) if y in spent or y in spare or used[y]]
    shown = [{"year": y, "used": used.get(y, 0),
              "left": max(service.per_year - used.get(y, 0), 0)} for y in years]
    return {"used": shown[0]["used"], "left": shown[0]["left"], "later": shown[1:],
            "spent": spent, "spare": spare}


@router.key(Key.MY_BENEFITS)
@with_held_tier
def my_benefits(ctx: Context, customer: Customer, tier: Tier) -> Reply:
    rules = ctx.services.rules
    draft = BookingDraft(rules=rules, calendar=calendar(), now=ctx.now, tier=tier.code,
                         me=booking_store.me(customer),
                         known=booking_store.Stored(ctx.conn, customer.id))
    services, quota = [], {}
    for service in rules.services_for(tier.code):
        if service.per_year:
            quota[service.code] = quota_by_year(draft, service)
        services.append({"service": service, "packages": service.packages_for(tier.code),
                         **quota.get(service.code, {"used": 0, "left": None, "later": []})})
    above = rules.next_tier(tier.code)
    mine = {s.code for s in rules.services_for(tier.code)}
    extra = [s for s in rules.services_for(above.code) if s.code not in mine] if above else []
    booked = [(INTENT_LABEL[k], quota[code]) for k, code in SERVICE_OF.items()
              if code in quota and k in ctx.router.keys]
    this = ctx.today.year
    return ctx.say("tier/benefits", tier=tier, basic=rules.basic_services_for(tier.code),
                   services=services, year=this, above=above, extra=extra,
                   bookable=[name for name, q in booked if q["spare"]],
                   # this year's uses are spent, a later year's are not: book a date then
                   later=[{"name": name, "year": q["spare"][0]} for name, q in booked
                          if q["spare"] and this in q["spent"]],
                   # every year a booking made now may fall in is spent
                   spent=[name for name, q in booked if not q["spare"]],
                   window_years=quota_years(ctx.now, rules),
                   advisor="health_advisor" in mine, festival_months=rules.festival.months)
