"""`jobs run` (one scheduled job now) and `scheduler` (the process that runs them on time)."""
from __future__ import annotations

import typer

from bot.cli.common import FUTURE_NEEDS_YES, parse_day, refuse_future_without_yes, settings
from bot.cli.db import prepare_database
from bot.cli.wechat import wechat_settings

app = typer.Typer(help="Scheduled jobs, run by hand.", no_args_is_help=True)


@app.command("run")
def jobs_run(job: str = typer.Argument(..., help="reminders (for services on the next day, then "
                                               "send) | tiers | dispatch (send what is due) "
                                               "| cleanup | daily (tiers, then cleanup)"),
             date: str = typer.Option(None, "--date", help="Run as if today were YYYY-MM-DD."),
             yes: bool = typer.Option(False, "--yes",
                                      help="Run tiers or daily for a date after today without asking.")
             ) -> None:
    """Run one scheduled job now."""
    from scheduler import JOBS

    if job not in JOBS:
        typer.echo(f"unknown job {job!r}; available: {', '.join(JOBS)}", err=True)
        raise typer.Exit(2)
    s = settings()
    day = parse_day(date, s)
    if job in FUTURE_NEEDS_YES:
        refuse_future_without_yes(day, s, yes)
    prepare_database(s)
    typer.echo(JOBS[job](wechat_settings(s), day))


def scheduler() -> None:
    """Run the scheduled jobs in this process: the daily tier run at 00:30, the reminder
    sweep, the outbox dispatch. On PostgreSQL one scheduler is active at a time (an
    advisory lock); others stand by."""
    from bot.app import configure_logging
    from scheduler import run_forever

    s = settings()
    configure_logging(s.log_level, s.wechat_app_secret, s.sms_gateway_token,
                      s.tencent_secret_key, tz=s.tz, fmt=s.log_format)
    prepare_database(s, redis=True)
    run_forever(wechat_settings(s))
