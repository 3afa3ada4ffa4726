"""`faq unanswered`: what customers asked that the FAQ could not answer (no identity kept)."""
from __future__ import annotations

import typer

from bot.cli.common import settings, shown
from bot.cli.db import open_session

app = typer.Typer(help="The FAQ: what customers asked that it could not answer.",
                  no_args_is_help=True)


@app.command("unanswered")
def faq_unanswered(since: str = typer.Option(None, "--since", help="From YYYY-MM-DD on (local date).")) -> None:
    """Questions that got the fallback, oldest first: when (local time), the asker's tier, the
    text. Who asked is never stored."""
    from datetime import date

    from bot.domain.unanswered import list_unanswered, since_local

    s = settings()
    start = None
    if since:
        try:
            start = since_local(date.fromisoformat(since), s.tz)
        except ValueError:
            raise typer.BadParameter(f"{since!r} is not a date (YYYY-MM-DD)") from None
    with open_session(s) as session:
        rows = list_unanswered(session, since=start)
    for r in rows:
        typer.echo(f"{shown(r.asked_at, s)}\t{r.tier or '-'}\t{r.text}")
    if not rows:
        typer.echo("no unanswered questions" + (f" since {since}" if since else ""))
