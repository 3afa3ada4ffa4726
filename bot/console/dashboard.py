"""The dashboard (/admin/dashboard, staff) and the year-end nudge (/admin/dashboard/nudge,
admin): the figures of bot.domain.dashboard as server-rendered SVG charts, each with its
numbers in a table."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from bot.console import charts
from bot.console.deps import StaffMember, commit, require_staff
from bot.console.web import PREFIX, page, said
from bot.domain import dashboard as figures
from menus import INTENT_LABEL, SERVICE_OF

# What a customer replies to book each service: its first intent word (预约洁牙).
BOOKING_WORDS = {code: INTENT_LABEL[key] for key, code in SERVICE_OF.items()}

router = APIRouter(prefix=PREFIX)


def labels():
    """The charts' words, from bot/templates/console/dashboard_labels.html."""
    from bot.console.web import env

    return env.get_template("dashboard_labels.html").module


def _by_month(rows, names: dict[str, str]) -> tuple[dict[str, list[int]], list[dict]]:
    """Chart series per group (12 months each) and the table's rows."""
    series: dict[str, list[int]] = {}
    for month, group, n in rows:
        series.setdefault(names.get(group, group), [0] * 12)[month - 1] += n
    table = [{"name": name, "months": values, "total": sum(values)}
             for name, values in series.items()]
    return series, table


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@router.get("/dashboard")
def dashboard(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    svc = request.app.state.services
    rules, now = svc.rules, svc.now()
    year, tz = now.year, svc.settings.tz
    services = {s.code: s.name for s in rules.services}
    tiers = {t.code: t.name for t in rules.tiers}
    with Session(svc.engine) as session:
        months = figures.bookings_by_month(session, year)
        rates = figures.rates(session, year)
        tier_counts = figures.tier_counts(session)
        quota = figures.quota_use(session, rules, year, tier_counts)
        unused = figures.unused_benefits(session, rules, year, tiers=tier_counts)
        questions = figures.unanswered_this_month(session, now.date(), tz)
        health = figures.outbox_health(session, now.date(), tz)
    words = labels()
    monthly = []
    for by, names in (("service", services), ("tier", tiers), ("city", {"": words.no_city})):
        series, table = _by_month(months[by], names)
        chart = charts.stacked_bars(words.months, series, empty=words.no_data)
        monthly.append({"by": by, "table": table, "chart": chart})
    quota_chart = charts.bars([q["name"] for q in quota], {
        words.entitled: [q["entitled"] for q in quota],
        words.users: [q["users"] for q in quota]}, horizontal=True, empty=words.no_data)
    unused_series: dict[str, list[int]] = {}
    service_names = list(dict.fromkeys(u["service_name"] for u in unused))
    for u in unused:
        unused_series.setdefault(u["tier_name"], [0] * len(service_names))[
            service_names.index(u["service_name"])] = u["customers"]
    unused_chart = charts.bars(service_names, unused_series, empty=words.no_data)
    health_chart = charts.lines([h["day"][5:] for h in health], {
        words.sent: [h["sent"] for h in health], words.retried: [h["retried"] for h in health],
        words.dead: [h["dead"] for h in health]}, empty=words.no_data)
    return page(request, "dashboard.html", year=year, monthly=monthly, months=words.months,
                rates=rates, no_show=_percent(rates.no_show_rate),
                late_cancel=_percent(rates.late_cancel_rate), quota=quota,
                quota_chart=quota_chart, unused=unused, unused_chart=unused_chart,
                questions=questions, health=health, health_chart=health_chart)


def _preview(request: Request) -> tuple[int, list[dict], dict[str, str]]:
    svc = request.app.state.services
    year = svc.now().year
    with Session(svc.engine) as session:
        audience = figures.nudge_preview(session, svc.rules, year)
    samples = {s.code: s.name for s in figures.yearly_services(svc.rules)}
    return year, audience, samples


@router.get("/dashboard/nudge")
def nudge_page(request: Request, me: StaffMember = Depends(require_staff("admin"))) -> Response:
    from bot.infra.texts import render

    year, audience, services = _preview(request)
    totals = {code: sum(a["customers"] for a in audience if a["service"] == code)
              for code in services}
    samples = {code: {"benefit": said("nudge_benefit", year=year, name=name),
                      "deadline": said("year_end", year=year),
                      "note": render("notify/year_end_note", words=BOOKING_WORDS[code])}
               for code, name in services.items()}
    sent = request.query_params.get("sent", "")
    notice = said("nudge_sent", n=int(sent)) if sent.isdigit() else None
    return page(request, "nudge.html", year=year, audience=audience, services=services,
                totals=totals, samples=samples, notice=notice)


@router.post("/dashboard/nudge")
async def nudge_send(request: Request,
                     me: StaffMember = Depends(require_staff("admin"))) -> Response:
    form = await request.form()
    chosen = [str(v) for v in form.getlist("service")]
    svc = request.app.state.services
    year, _, services = _preview(request)
    if str(form.get("year") or "") != str(year):
        return nudge_error(request, said("nudge_expired"))
    if not chosen or any(c not in services for c in chosen):
        return nudge_error(request, said("nudge_none"))
    if form.get("confirm") != "yes":
        return nudge_error(request, said("nudge_unchecked"))
    with Session(svc.engine, expire_on_commit=False) as session:
        queued = figures.send_nudge(session, svc.rules, me.openid, year, chosen, svc.now(),
                                   BOOKING_WORDS)
        commit(request, session)
    return RedirectResponse(f"{PREFIX}/dashboard/nudge?sent={sum(queued.values())}",
                            status_code=303)


def nudge_error(request: Request, error: str) -> Response:
    year, audience, services = _preview(request)
    totals = {code: sum(a["customers"] for a in audience if a["service"] == code)
              for code in services}
    return page(request, "nudge.html", status_code=400, error=error, year=year,
                audience=audience, services=services, totals=totals, samples={})
