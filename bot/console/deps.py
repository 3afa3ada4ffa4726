"""What every console route depends on: the signed-in staff member (`require_staff`), the
CSRF check of every POST, the database session, and the commit that sends what an action
queued in the outbox.

    @router.get("/admin/dashboard")
    def dashboard(request: Request, me: StaffMember = Depends(require_staff("admin"))): ...

An anonymous request is redirected to /admin/login (303); a specialist on an admin route
gets 403; a POST without the session's CSRF token gets 403 and changes nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import func, or_, select
from sqlmodel import Session

from bot.domain import staff_login
from bot.domain.bookings import ACTIVE, calendar
from bot.infra.outbox.queue import QUEUED
from bot.infra.services import Services
from models import Booking

log = logging.getLogger(__name__)

COOKIE = "vip_admin"
PRE_COOKIE = "vip_pre"  # the anonymous sign-in form's CSRF seed
ROLES = ("specialist", "admin")


@dataclass(frozen=True)
class StaffMember:
    """The signed-in staff member of a console request."""

    openid: str
    name: str
    role: str
    login: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class SignInRequired(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


async def to_sign_in(request: Request, exc: SignInRequired) -> RedirectResponse:
    target = "/admin/login"
    if exc.path and exc.path not in ("/admin", "/admin/", "/admin/login"):
        target += "?next=" + quote(exc.path, safe="/")
    return RedirectResponse(target, status_code=303)


class Forbidden(Exception):
    pass


def services(request: Request) -> Services:
    return request.app.state.services


def now(request: Request) -> datetime:
    return services(request).now()


def sign_in_rules(request: Request) -> staff_login.SignInRules:
    return staff_login.SignInRules.of(services(request).settings)


def secure_cookies(request: Request) -> bool:
    return services(request).settings.public_base_url.lower().startswith("https://")


# --- The cookie ---------------------------------------------------------------------------


def _mac(secret: str, purpose: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def signed(secret: str, token: str) -> str:
    return f"{token}.{_mac(secret, 'admin-cookie', token)[:32]}"


def unsigned(secret: str, value: str | None) -> str | None:
    """The token of a cookie whose signature holds, else None."""
    if not value or "." not in value:
        return None
    token, sig = value.rsplit(".", 1)
    good = _mac(secret, "admin-cookie", token)[:32]
    return token if hmac.compare_digest(sig, good) else None


def csrf_token(secret: str, seed: str) -> str:
    """The synchronizer token of a session (or of the sign-in form's seed cookie)."""
    return _mac(secret, "csrf", seed)[:40]


def set_cookie(response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/admin", httponly=True,
                        samesite="lax", secure=secure_cookies(request))


async def check_csrf(request: Request, seed: str) -> None:
    """A state-changing request carries the token (form field `csrf` or X-CSRF-Token)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get("x-csrf-token")
    if not sent:
        form = await request.form()
        sent = str(form.get("csrf") or "")
    good = csrf_token(services(request).settings.secret_key, seed)
    if not sent or not hmac.compare_digest(sent, good):
        log.warning("console %s %s refused: missing or wrong CSRF token", request.method,
                    request.url.path)
        raise Forbidden()


# --- The signed-in staff member -----------------------------------------------------------


def _member(request: Request) -> StaffMember | None:
    svc = services(request)
    token = unsigned(svc.settings.secret_key, request.cookies.get(COOKIE))
    if token is None:
        return None
    with Session(svc.engine) as session:
        found = staff_login.current(session, svc.settings.secret_key, token, svc.now(),
                                    sign_in_rules(request))
        member = None if found is None else StaffMember(found[0].openid, found[0].name,
                                                        found[0].role, found[0].login or "")
        session.commit()
    if member is not None:
        request.state.staff = member
        request.state.token = token
        request.state.csrf = csrf_token(svc.settings.secret_key, token)
    return member


def require_staff(role: str = "specialist"):
    """A dependency: the signed-in StaffMember with at least `role` (specialist < admin).
    Anonymous (or an ended session): redirected to /admin/login; a specialist on an admin
    route: 403. A POST must carry the session's CSRF token (403 otherwise)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")

    async def dependency(request: Request) -> StaffMember:
        member = _member(request)
        if member is None:
            raise SignInRequired(request.url.path if request.method == "GET" else "")
        if role == "admin" and not member.is_admin:
            raise Forbidden()
        await check_csrf(request, request.state.token)
        return member

    return dependency


def forbidden_page(request: Request) -> HTMLResponse:
    from bot.console.web import page

    return page(request, "forbidden.html", status_code=403)


async def on_forbidden(request: Request, exc: Forbidden) -> HTMLResponse:
    return forbidden_page(request)


# --- Data for every page --------------------------------------------------------------------


def banner_years(request: Request) -> list[int]:
    """Years of active bookings that the calendar knows only provisionally (the banner on
    every console page)."""
    svc = services(request)
    day = func.coalesce(Booking.confirmed_date, Booking.preferred_date)
    with Session(svc.engine) as session:
        rows = session.execute(select(day).where(Booking.status.in_(ACTIVE))
                               .where(or_(Booking.confirmed_date.is_not(None),
                                          Booking.preferred_date.is_not(None)))
                               .distinct()).scalars().all()
    cal = calendar()
    return sorted({d.year for d in rows if d is not None and cal.is_provisional(d)})


def commit(request: Request, session: Session) -> None:
    """Commit an action and send what it queued in the outbox at once (as the chat
    pipeline does after its commit); the dispatcher's sweep retries what fails."""
    queued = session.info.pop(QUEUED, None)
    session.commit()
    if queued:
        services(request).kick_outbox(queued)
