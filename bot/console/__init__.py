"""The staff web console at /admin (on when ADMIN_ENABLED=true): server-rendered pages in
Chinese over the same domain functions as the staff chat commands (bot.domain.staff_desk,
broadcasts, messages, the outbox, the importer). `mount(app)` adds its routes, the security
headers and the sign-in redirect to the FastAPI app."""
from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    from bot.console import pages
    from bot.console.deps import Forbidden, SignInRequired, on_forbidden, to_sign_in
    from bot.console.web import SecurityHeaders

    app.include_router(pages.router)
    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(Forbidden, on_forbidden)
    app.add_middleware(SecurityHeaders)
