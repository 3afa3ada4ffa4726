"""`tiers recompute`: the tier engine by hand."""
from __future__ import annotations

import typer

from bot.cli.common import parse_day, refuse_future_without_yes, settings
from bot.cli.db import prepare_database
from bot.cli.wechat import sync_tags

app = typer.Typer(help="The tier engine.", no_args_is_help=True)


@app.command("recompute")
def tiers_recompute(date: str = typer.Option(None, "--date", help="Evaluate as of YYYY-MM-DD."),
                    everyone: bool = typer.Option(False, "--all",
                                                  help="Evaluate every customer (default: those "
                                                       "with an event since the last run)."),
                    yes: bool = typer.Option(False, "--yes", help="Run a date after today without asking.")) -> None:
    """Fast up every day; slow down on 30 June and 31 December; drop when no policy is left.
    Evaluates the customers with an event since the last run (everyone on a review day)."""
    from bot.domain.rules import load_rules
    from bot.domain.tier_engine import recompute_due

    s = settings()
    day = parse_day(date, s)
    refuse_future_without_yes(day, s, yes)
    prepare_database(s)
    from bot.infra.db import engine_for

    engine = engine_for(s, pool_timeout=30)
    report = recompute_due(engine, load_rules(s.rules_file), day, everyone=everyone,
                           notice_days=s.tier_notice_days)
    typer.echo(report.render())
    sync_tags(s)
