"""Who may do what in the console (issue 16): every route under /admin walked as anonymous
(redirected to sign-in), as a specialist (403 on admin routes) and as an admin (200); every
POST refused without the CSRF token (403, nothing changed); the security headers; the
console off unless ADMIN_ENABLED."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
import time_machine
from sqlmodel import Session

from models import Booking, HospitalVisit, LeftMessage, StaffAudit
from tests.support.console import ADMIN_LOGIN, SPEC_LOGIN, add_staff, csrf_of, sign_in
from tests.support.booking import WED, bookings
from tests.support.staff import ADMIN, SPEC, U, audits, booked, desk  # noqa: F401

pytestmark = pytest.mark.settings(admin_enabled=True)

# Every console route and who may use it (the issue: specialists work bookings, messages and
# visits; admins also broadcast, manage staff, institutions and the outbox, and reveal data).
ROUTES = {
    ("GET", "/admin/bookings"): "specialist",
    ("GET", "/admin/bookings.csv"): "specialist",
    ("GET", "/admin/bookings/{number}"): "specialist",
    ("POST", "/admin/bookings/{number}/confirm"): "specialist",
    ("POST", "/admin/bookings/{number}/close"): "specialist",
    ("POST", "/admin/bookings/{number}/cancel"): "specialist",
    ("GET", "/admin/messages"): "specialist",
    ("POST", "/admin/messages/{message_id}/reply"): "specialist",
    ("POST", "/admin/messages/{message_id}/close"): "specialist",
    ("GET", "/admin/visits"): "specialist",
    ("POST", "/admin/visits/{visit_id}/done"): "specialist",
    ("GET", "/admin/customers"): "specialist",
    ("GET", "/admin/customers/{customer_id}"): "specialist",
    ("POST", "/admin/customers/{customer_id}/reveal"): "admin",
    ("GET", "/admin/calendar"): "specialist",
    ("GET", "/admin/audit"): "specialist",
    ("GET", "/admin/broadcasts"): "admin",
    ("POST", "/admin/broadcasts/preview"): "admin",
    ("POST", "/admin/broadcasts/send"): "admin",
    ("GET", "/admin/outbox"): "admin",
    ("POST", "/admin/outbox/retry"): "admin",
    ("GET", "/admin/institutions"): "admin",
    ("POST", "/admin/institutions/upload"): "admin",
    ("GET", "/admin/staff"): "admin",
    ("POST", "/admin/staff/invite"): "admin",
    ("POST", "/admin/staff/{openid}/remove"): "admin",
    ("POST", "/admin/staff/{openid}/password"): "admin",
    ("POST", "/admin/logout"): "specialist",
    ("GET", "/admin/dashboard"): "specialist",
    ("GET", "/admin/dashboard/nudge"): "admin",
    ("POST", "/admin/dashboard/nudge"): "admin",
}
PUBLIC = {("GET", "/admin"), ("GET", "/admin/"), ("GET", "/admin/login"),
          ("POST", "/admin/login"), ("GET", "/admin/static/console.css"),
          ("GET", "/admin/login/link"), ("POST", "/admin/login/link")}


def _walk(routes):
    for r in routes:
        inner = getattr(r, "original_router", None)  # an included router (FastAPI ≥ 0.16x)
        if inner is not None:
            yield from _walk(inner.routes)
        else:
            yield r


def console_routes(app) -> set[tuple[str, str]]:
    return {(m, r.path) for r in _walk(app.routes) if getattr(r, "path", "").startswith("/admin")
            for m in getattr(r, "methods", ()) if m in ("GET", "POST")}


@pytest.fixture
async def world(wx_plain, desk, services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
    now = datetime.now(timezone.utc)
    with Session(services.engine) as s:
        m = LeftMessage(openid=U, customer_id=desk.id, text="请回电", created_at=now)
        v = HospitalVisit(customer_id=desk.id, hospital="协和医院", ward="3床",
                          admission_date=date(2026, 11, 20), created_at=now)
        s.add(m), s.add(v)
        s.commit()
        ids = dict(number=b.number, message_id=m.id, visit_id=v.id, customer_id=desk.id,
                   openid=SPEC)
    return ids


def url(path: str, ids: dict) -> str:
    return path.format(**ids)


def test_every_console_route_is_in_the_matrix(app):
    assert console_routes(app) == set(ROUTES) | PUBLIC


async def test_anonymous_is_sent_to_sign_in_everywhere(http, world, services):
    for (method, path) in ROUTES:
        res = await http.request(method, url(path, world), follow_redirects=False)
        assert res.status_code == 303, (method, path, res.status_code)
        assert res.headers["location"].startswith("/admin/login"), (method, path)
    assert bookings(services)[0].status == "submitted"


@pytest.mark.parametrize("who", ["specialist", "admin"])
async def test_each_role_gets_what_it_may_use_and_403_otherwise(http, world, services, who):
    await sign_in(http, SPEC_LOGIN if who == "specialist" else ADMIN_LOGIN)
    csrf = csrf_of((await http.get("/admin/bookings")).text)
    for (method, path), role in ROUTES.items():
        if method == "GET":
            res = await http.get(url(path, world))
            allowed = who == "admin" or role == "specialist"
            assert res.status_code == (200 if allowed else 403), (who, path, res.status_code)
    before = audits(services)
    for (method, path), role in ROUTES.items():
        if method == "POST" and role == "admin" and who == "specialist":
            res = await http.post(url(path, world), data={"csrf": csrf, "row": "all",
                                                         "name": "x", "role": "admin"})
            assert res.status_code == 403, (who, path, res.status_code)
    assert audits(services) == before  # a refused action writes nothing


async def test_a_post_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing(
        http, world, services):
    await sign_in(http, SPEC_LOGIN)
    page = await http.get(f"/admin/bookings/{world['number']}")
    good = csrf_of(page.text)
    form = {"day": "2026-11-30", "at": "09:30", "place": "", "version": "1"}
    for token in (None, "", good[:-1] + ("0" if good[-1] != "0" else "1")):
        data = dict(form) if token is None else {**form, "csrf": token}
        res = await http.post(f"/admin/bookings/{world['number']}/confirm", data=data)
        assert res.status_code == 403
    assert bookings(services)[0].status == "submitted"
    # The same form with the right token goes through (the other side of the edge).
    with time_machine.travel(WED, tick=True):
        ok = await http.post(f"/admin/bookings/{world['number']}/confirm",
                             data={**form, "csrf": good})
    assert ok.status_code == 200 and bookings(services)[0].status == "confirmed"


async def test_every_page_has_the_security_headers_and_none_is_cacheable(http, world):
    await sign_in(http, ADMIN_LOGIN)
    for (method, path) in ROUTES:
        if method != "GET":
            continue
        res = await http.get(url(path, world))
        csp = res.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp and res.headers["x-frame-options"] == "DENY"
        assert res.headers["referrer-policy"] == "same-origin"
        assert res.headers["cache-control"] == "no-store", path
        assert "<script" not in res.text  # no inline script anywhere
    login = await http.get("/admin/login")
    assert login.headers["cache-control"] == "no-store"


@pytest.mark.settings(admin_enabled=False)
async def test_the_console_is_off_unless_enabled(http):
    assert (await http.get("/admin/login")).status_code == 404
    assert (await http.get("/admin/bookings")).status_code == 404
