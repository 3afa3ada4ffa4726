"""`bind` and `unbind`: a staff-verified binding of a WeChat openid to a policyholder (one,
or every row of a CSV through the importer), through `accounts.bind` and `accounts.unbind`
as the chat's binding does; each change audited, and the tier tag follows at once."""
from __future__ import annotations

from pathlib import Path

import typer

from bot.cli.common import operator, settings
from bot.cli.db import open_session
from bot.cli.importing import run_import
from bot.cli.wechat import sync_tags


def bind(openid: str = typer.Argument(None, help="The WeChat openid (without --file)"),
         id_number: str = typer.Argument(None, help="The policyholder's ID number (without --file)"),
         file: Path = typer.Option(None, "--file",
                                   help="CSV with columns openid, id_number: bind every row."),
         skip_bad: bool = typer.Option(False, "--skip-bad",
                                       help="With --file: bind the good rows anyway.")) -> None:
    """Bind a WeChat openid to the policyholder with this ID number (staff-verified), or
    every row of a CSV file (--file; all or nothing unless --skip-bad)."""
    from datetime import datetime

    from bot.domain import accounts
    from bot.domain.identity import mask_id_number, normalize_id_number
    from bot.domain.staff_desk import audit
    from models import WechatUser

    if file is not None:
        if openid is not None or id_number is not None:
            raise typer.BadParameter("give either OPENID ID_NUMBER or --file, not both")
        report = run_import("bindings", file, skip_bad, exit=False)
        if report.written and report.inserted + report.updated:
            sync_tags(settings())  # the new users join their tags
        raise typer.Exit(1 if report.rejected else 0)
    if openid is None or id_number is None:
        raise typer.BadParameter("give OPENID and ID_NUMBER, or --file FILE.csv")
    s = settings()
    with open_session(s) as session:
        number = normalize_id_number(id_number)
        customer = accounts.customer_by_id_number(session, number)
        if customer is None:
            typer.echo(f"no policyholder with ID number {mask_id_number(number)}", err=True)
            raise typer.Exit(1)
        now = datetime.now(s.tz)
        user = session.get(WechatUser, openid)
        before = {"customer_id": user.customer_id} if user is not None else None
        try:
            accounts.bind(session, openid, customer, now)
        except accounts.BoundElsewhere:
            typer.echo(f"{mask_id_number(number)} is bound to another openid; unbind it first",
                       err=True)
            raise typer.Exit(1) from None
        session.flush()
        audit(session, operator(), "bind", openid, now, before=before,
              after={"customer_id": customer.id})
        session.commit()
    typer.echo(f"bound {openid} to {mask_id_number(number)}")
    sync_tags(s, [openid])  # into the tier's WeChat tag at once, as binding in chat does


def unbind(openid: str) -> None:
    """Detach a WeChat openid from its policyholder."""
    from datetime import datetime

    from bot.domain import accounts
    from bot.domain.staff_desk import audit
    from models import WechatUser

    s = settings()
    with open_session(s) as session:
        user = session.get(WechatUser, openid)
        before = {"customer_id": user.customer_id} if user is not None else None
        if not accounts.unbind(session, openid):
            typer.echo(f"{openid} is not bound", err=True)
            raise typer.Exit(1)
        session.flush()
        audit(session, operator(), "unbind", openid, datetime.now(s.tz), before=before,
              after={"customer_id": None})
        session.commit()
    typer.echo(f"unbound {openid}")
    sync_tags(s, [openid])
