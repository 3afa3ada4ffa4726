"""`audit list`: the one audit log of staff actions (chat, console and CLI alike)."""
from __future__ import annotations

import typer

from bot.cli.common import settings, shown, shown_record
from bot.cli.db import open_session

app = typer.Typer(help="The audit log of staff actions.", no_args_is_help=True)


@app.command("list")
def audit_list(since: str = typer.Option(None, "--since", help="From YYYY-MM-DD on."),
               staff: str = typer.Option(None, "--staff", help="Only this staff openid.")) -> None:
    """Staff actions, oldest first: when, who, what, on which record, before and after."""
    from datetime import date

    from bot.domain.staff_desk import audit_rows

    day = None
    if since:
        try:
            day = date.fromisoformat(since)
        except ValueError:
            raise typer.BadParameter(f"{since!r} is not a date (YYYY-MM-DD)") from None
    s = settings()
    with open_session(s) as session:
        rows = audit_rows(session, since=day, staff=staff)
    for r in rows:
        typer.echo(f"{r.id}\t{shown(r.at, s, '%Y-%m-%d %H:%M:%S')}\t{r.staff_openid}\t{r.action}\t{r.target}"
                   f"\tbefore={shown_record(r.before, s)}\tafter={shown_record(r.after, s)}")
    if not rows:
        typer.echo("no staff actions recorded" + (f" since {since}" if since else ""))
