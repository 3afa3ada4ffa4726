"""`outbox list|retry`: the queue of messages to customers (bot.infra.outbox), as the
console's outbox page shows and retries it."""
from __future__ import annotations

import typer

from bot.cli.common import settings, shown

app = typer.Typer(help="The outbox of messages to customers.", no_args_is_help=True)


@app.command("list")
def outbox_list(dead: bool = typer.Option(False, "--dead", help="Only dead letters.")) -> None:
    """Messages waiting, being sent or dead (newest first), recipients masked."""
    from bot.infra import outbox
    from bot.infra.db import engine_for
    from bot.infra.privacy import mask_phone

    s = settings()
    engine = engine_for(s)
    try:
        rows = outbox.listing(engine, dead_only=dead)
    finally:
        engine.dispose()
    for r in rows:
        who = mask_phone(r.recipient) if r.channel == "sms" else r.recipient[:8] + "…"
        typer.echo(f"#{r.id}\t{r.status}\t{r.kind}\t{r.channel}\t{who}\ttries {r.tries}\t"
                   f"{shown(r.created_at, s)}\t{r.last_error or ''}")
    if not rows:
        typer.echo("no dead messages" if dead else "nothing waiting")


@app.command("retry")
def outbox_retry(row_id: int = typer.Argument(None, metavar="ID"),
                 all_dead: bool = typer.Option(False, "--all-dead", help="Every dead letter.")) -> None:
    """Queue a dead (or expired, dropped) message again, or all dead ones."""
    import time

    from bot.infra import outbox
    from bot.infra.db import engine_for

    if (row_id is None) == (not all_dead):
        typer.echo("give an ID or --all-dead", err=True)
        raise typer.Exit(2)
    s = settings()
    engine = engine_for(s)
    try:
        n = outbox.retry(engine, time.time(), row_id, all_dead=all_dead)
    finally:
        engine.dispose()
    if row_id is not None and not n:
        typer.echo(f"no dead, expired or dropped message #{row_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{n} message(s) queued again")
