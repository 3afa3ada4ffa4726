"""`calendar check`: which source covers a year's working days."""
from __future__ import annotations

import typer

from bot.cli.common import settings
from bot.infra.config import ROOT

app = typer.Typer(help="China's working-day calendar.", no_args_is_help=True)


@app.command("check")
def calendar_check(year: list[int] = typer.Argument(None, help="Years (default: this and next).")) -> None:
    """Which source covers a year's working days; exit 1 when a year is provisional."""
    from datetime import datetime

    from bot.domain.workdays import Calendar, CalendarError, check_command

    s = settings()
    try:
        cal = Calendar.from_file(ROOT / "calendar_overrides.toml")
    except CalendarError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    this_year = datetime.now(s.tz).year
    status, text = check_command(cal, year or [this_year, this_year + 1])
    typer.echo(text)
    raise typer.Exit(status)
