"""理赔住院探视 by chat: hospital, ward and admission date, then a visit request for staff."""
from __future__ import annotations

from bot.conversation import Context, Flow, FlowData, Invalid, Reply, Router, Step
from bot.domain import visits
from handlers.tiers import with_service
from menus import VOCABULARY, Key

router = Router(VOCABULARY)


class VisitData(FlowData):
    customer_id: int | None = None
    hospital: str | None = None
    ward: str | None = None
    admitted: str | None = None  # ISO date


def _hospital(ctx: Context, text: str, data: VisitData) -> str:
    if not 2 <= len(text) <= 60:
        raise Invalid("visit/bad_hospital")
    return text


def _ward(ctx: Context, text: str, data: VisitData) -> str:
    if not 1 <= len(text) <= 30:
        raise Invalid("visit/bad_ward")
    return text


def _admitted(ctx: Context, text: str, data: VisitData) -> str:
    day = visits.admission_date(text, ctx.today)
    if day is None:
        raise Invalid("visit/bad_date", days=visits.ADMISSION_LOOKBACK_DAYS)
    return day.isoformat()


def _finish(ctx: Context, data: VisitData) -> Reply:
    from datetime import date

    visit = visits.request_visit(ctx.session, data.customer_id, data.hospital, data.ward,
                                 date.fromisoformat(data.admitted), ctx.now)
    return ctx.say("visit/done", number=visit.id, hospital=data.hospital)


visit_flow = router.flow(Flow(
    name="visit", title="住院探视申请",
    steps=[Step("hospital", "visit/ask_hospital", _hospital, free_text=True),
           Step("ward", "visit/ask_ward", _ward, free_text=True),
           Step("admitted", "visit/ask_date", _admitted)],
    finish=_finish, model=VisitData,
))


@router.key(Key.HOSPITAL_VISIT)
@with_service("hospital_visit")
def hospital_visit(ctx: Context, customer, tier) -> Reply:
    if not visits.eligible(ctx.session, customer.id):
        return ctx.say("visit/no_policy")
    return ctx.start(visit_flow, customer_id=customer.id)
