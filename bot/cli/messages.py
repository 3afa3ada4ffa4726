"""`messages list|close`: messages customers left for a human agent, through
bot.domain.messages, the layer `#留言`/`#回复` and the console's message page use."""
from __future__ import annotations

import typer

from bot.cli.common import operator, settings, shown
from bot.cli.db import open_session

app = typer.Typer(help="Messages customers left for a human agent.", no_args_is_help=True)


@app.command("list")
def messages_list(open_only: bool = typer.Option(False, "--open", help="Only unanswered ones.")) -> None:
    """Messages left after 人工 outside service hours, oldest first."""
    from bot.domain.messages import list_messages

    s = settings()
    with open_session(s) as session:
        rows = list_messages(session, open_only=open_only)
        for m in rows:
            state = f"closed {shown(m.closed_at, s)} by {m.closed_by}" if m.closed_at else "open"
            typer.echo(f"#{m.id}\t{shown(m.created_at, s)}\t{m.openid}\t{state}\t{m.text}")
    if not rows:
        typer.echo("no messages" + (" open" if open_only else ""))


@app.command("close")
def messages_close(message_id: int = typer.Argument(..., metavar="ID"),
                   by: str = typer.Option("cli", "--by", help="Who answered it.")) -> None:
    """Mark a message answered (audited); a message already closed keeps its first close."""
    from datetime import datetime

    from bot.domain.messages import close_message
    from bot.domain.staff_desk import StaffRefused

    s = settings()
    with open_session(s) as session:
        try:
            close_message(session, operator(), message_id, datetime.now(s.tz), by=by)
        except StaffRefused as exc:
            if exc.code != "message_closed":
                typer.echo(f"no message #{message_id}", err=True)
                raise typer.Exit(1) from None
            typer.echo(f"message #{message_id} was already closed")
            return
        session.commit()
    typer.echo(f"message #{message_id} closed")
