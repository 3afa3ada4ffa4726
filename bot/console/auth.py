"""Signing in and out of the console."""
from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlmodel import Session

from bot.console import deps
from bot.console.deps import COOKIE, PRE_COOKIE, StaffMember, require_staff
from bot.console.web import STATIC, page, said
from bot.domain import staff_login

router = APIRouter(prefix="/admin")


def _safe_next(target: str | None) -> str:
    """Only a path inside the console (never another site, never //host)."""
    if target and target.startswith("/admin/") and not target.startswith("//") \
            and "\\" not in target and "://" not in target:
        return target
    return "/admin/bookings"


@router.get("/static/console.css", include_in_schema=False)
def stylesheet() -> FileResponse:
    return FileResponse(STATIC / "console.css", media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def home(request: Request) -> RedirectResponse:
    return RedirectResponse("/admin/bookings", status_code=303)


def _login_form(request: Request, status_code: int = 200, **values) -> Response:
    settings = deps.services(request).settings
    seed = deps.unsigned(settings.secret_key, request.cookies.get(PRE_COOKIE))
    fresh = seed is None
    if fresh:
        seed = secrets.token_urlsafe(16)
    request.state.csrf = deps.csrf_token(settings.secret_key, seed)
    response = page(request, "login.html", status_code=status_code,
                    next=_safe_next(request.query_params.get("next") or values.pop("next", None)),
                    **values)
    if fresh:
        deps.set_cookie(response, request, PRE_COOKIE, deps.signed(settings.secret_key, seed),
                        max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    if deps._member(request) is not None:
        return RedirectResponse("/admin/bookings", status_code=303)
    request.state.staff = None
    return _login_form(request)


async def _sign_in_form(request: Request):
    """A sign-in POST's checks (the pre-session cookie the form was served with, and its
    CSRF token): the services, the secret and the client's address."""
    svc = deps.services(request)
    secret = svc.settings.secret_key
    seed = deps.unsigned(secret, request.cookies.get(PRE_COOKIE))
    if seed is None:
        raise deps.Forbidden()
    await deps.check_csrf(request, seed)
    return svc, secret, request.client.host if request.client else "unknown"


def _signed_in(request: Request, secret: str, token: str, to: str) -> Response:
    """The session cookie for a new sign-in, the pre-session one ended, then on to `to`."""
    response = RedirectResponse(to, status_code=303)
    deps.set_cookie(response, request, COOKIE, deps.signed(secret, token),
                    max_age=deps.sign_in_rules(request).longest_hours * 3600)
    response.delete_cookie(PRE_COOKIE, path="/admin")
    return response


@router.post("/login")
async def login(request: Request, login: str = Form(""), password: str = Form(""),
                next: str = Form("")) -> Response:
    svc, secret, address = await _sign_in_form(request)
    with Session(svc.engine, expire_on_commit=False) as session:
        result = staff_login.sign_in(session, secret, login[:200], password[:200], address,
                                     svc.now(), deps.sign_in_rules(request))
        session.commit()
    if result.token is None:
        # The same answer for a wrong password, an unknown login and a locked one.
        return _login_form(request, status_code=401, error="wrong", login=login[:64],
                           next=next)
    return _signed_in(request, secret, result.token, _safe_next(next))


@router.get("/login/link")
def link_form(request: Request) -> Response:
    """The page a #登录 link opens: one button that signs in (a GET never uses the link,
    so a link preview fetching the page spends nothing)."""
    request.state.staff = None
    token = request.query_params.get("t", "")[:64]
    return _login_form(request, link=token)


@router.post("/login/link")
async def link_sign_in(request: Request, t: str = Form("")) -> Response:
    svc, secret, address = await _sign_in_form(request)
    with Session(svc.engine, expire_on_commit=False) as session:
        result = staff_login.redeem_link(session, secret, t[:64], svc.now(), address)
        session.commit()
    if result.token is None:
        request.state.staff = None
        return _login_form(request, status_code=401, error=said("link_refused"))
    return _signed_in(request, secret, result.token, "/admin/bookings")


@router.post("/logout")
def logout(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        staff_login.sign_out(session, svc.settings.secret_key, request.state.token, svc.now())
        session.commit()
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response
