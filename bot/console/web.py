"""The console's rendering: its own Jinja2 environment with autoescape on (customer text is
data, never markup), the pages' common context, and the security headers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from bot.infra.privacy import mask_id_number, mask_name, mask_phone, mask_policy_no
from bot.infra.texts import local, local_record, render

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "console"
STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/admin"

env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                  autoescape=True, trim_blocks=True, lstrip_blocks=True, auto_reload=False)


def _when(value, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    value = local(value)
    return value.strftime(fmt) if hasattr(value, "strftime") else str(value)


env.filters["local"] = local
env.filters["when"] = _when
env.filters["record"] = local_record  # an audit before/after: its instants in TIMEZONE
env.filters["day"] = lambda d: "" if d is None else d.strftime("%Y-%m-%d")
env.filters["mask_name"] = mask_name
env.filters["mask_phone"] = mask_phone
env.filters["mask_id"] = mask_id_number
env.filters["mask_policy"] = mask_policy_no


def said(code: str, **facts: Any) -> Markup:
    """One of the console's sentences (bot/templates/console/said.html) by code: what a form
    refused or what was done. Escaped there, so shown as it is."""
    return Markup(env.get_template("said.html").render(code=code, **facts).strip())


def refusal(exc) -> Markup:
    """The chat command's refusal sentence for a `StaffRefused` (staff/refused.j2, the same
    words as #确认 and the rest). The staff templates escape every value they print
    (bot.infra.texts `inert`), so the sentence is safe as it is."""
    return Markup(render("staff/refused", code=exc.code, **exc.facts))


def wording():
    """The console's names and formats (bot/templates/console/names.html)."""
    return env.get_template("names.html").module


def page(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A console page: `name` under bot/templates/console/, with the signed-in member
    (`me`), the CSRF token (`csrf`), the provisional-year banner and the values."""
    from bot.console.deps import banner_years

    state = request.state
    me = getattr(state, "staff", None)
    context = dict(me=me, csrf=getattr(state, "csrf", ""), prefix=PREFIX, path=request.url.path,
                   provisional_years=banner_years(request) if me is not None else [],
                   notice=values.pop("notice", None), error=values.pop("error", None))
    context.update(values)
    return HTMLResponse(env.get_template(name).render(**context), status_code=status_code)


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"same-origin"), (b"x-content-type-options", b"nosniff")]


class SecurityHeaders:
    """Pure ASGI middleware: every response under /admin carries the CSP (no inline script),
    X-Frame-Options DENY, Referrer-Policy same-origin and nosniff; every page but the static
    stylesheet also Cache-Control: no-store (pages show personal data). Other paths (the
    /wechat door) pass untouched."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            return await self.app(scope, receive, send)
        static = path.startswith(PREFIX + "/static/")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers += [h for h in HEADERS if h[0] not in names]
                if not static:
                    headers = [h for h in headers if h[0].lower() != b"cache-control"]
                    headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
