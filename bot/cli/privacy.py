"""`privacy export OPENID`: everything the bot holds about one WeChat user (PIPL), audited."""
from __future__ import annotations

import typer

from bot.cli.common import operator, settings
from bot.cli.db import open_session

app = typer.Typer(help="Personal data requests (PIPL).", no_args_is_help=True)


@app.command("export")
def privacy_export(openid: str) -> None:
    """Print, as JSON, everything the bot holds about one WeChat user."""
    import json
    from datetime import datetime

    from bot.domain.privacy import export
    from bot.domain.staff_desk import audit

    s = settings()
    with open_session(s) as session:
        data = export(session, openid)
        found = not (data["wechat_user"] is None and not data["left_messages"])
        # Reading one person's data is audited, found or not (who looked, for whom).
        audit(session, operator(), "privacy_export", openid, datetime.now(s.tz),
              after={"found": found})
        session.commit()
    if not found:
        typer.echo(f"nothing is stored about {openid}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
