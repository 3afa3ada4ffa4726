"""`demo load`: the demo's customers, policies, institutions and staff."""
from __future__ import annotations

import typer

from bot.cli.common import settings
from bot.cli.db import prepare_database

app = typer.Typer(help="Demo data.", no_args_is_help=True)


@app.command("load")
def demo_load(if_empty: bool = typer.Option(False, "--if-empty",
                                            help="Do nothing when customers exist.")) -> None:
    """Load demo customers (one per tier), family members and policies."""
    from bot.demo import load_demo

    s = settings()
    prepare_database(s)
    typer.echo(load_demo(s, if_empty=if_empty))
