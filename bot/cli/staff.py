"""`staff add|invite|list|remove|passwd`: staff accounts, through the same domain functions
as `#注册` (accounts.save_staff) and the console's staff page (staff_desk.create_invite,
staff_login.set_password and remove_staff)."""
from __future__ import annotations

import typer

from bot.cli.common import operator, read_password, settings, shown
from bot.cli.db import open_session
from bot.domain.vocab import STAFF_ROLES

app = typer.Typer(help="Staff accounts.", no_args_is_help=True)


def _no_hash(row: dict | None) -> dict | None:
    return None if row is None else {**row, "password_hash": bool(row.get("password_hash"))}


@app.command("add")
def staff_add(openid: str, name: str = typer.Option(..., "--name"),
              role: str = typer.Option(..., "--role", help="specialist | admin"),
              login: str = typer.Option(None, "--login",
                                        help="Sign-in name for the web console (default: "
                                             "from the name)."),
              password: bool = typer.Option(False, "--password",
                                            help="Also set a console password (prompted).")) -> None:
    """Register a health specialist or admin by their WeChat openid."""
    from datetime import datetime

    from bot.domain import staff_login
    from bot.domain.accounts import LoginRefused, check_login, save_staff
    from bot.domain.staff_desk import audit, snapshot
    from models import Staff, WechatUser

    if role not in STAFF_ROLES:
        raise typer.BadParameter("role must be specialist or admin")
    if not name.strip() or len(name) > 64 or not openid.strip() or len(openid) > 64:
        raise typer.BadParameter("openid and name must be 1-64 characters")
    try:
        login = check_login(login) if login else None
    except LoginRefused:
        raise typer.BadParameter("--login: 2-64 letters, digits, _ . or -") from None
    s = settings()
    pw = read_password(password)
    with open_session(s) as session:
        now = datetime.now(s.tz)
        before = snapshot(session.get(Staff, openid))
        try:
            member = save_staff(session, openid, name, role, now, login=login)
        except LoginRefused as exc:
            typer.echo(f"the login {login} is taken by {exc.holder}", err=True)
            raise typer.Exit(1) from None
        audit(session, operator(), "staff_add", openid, now, before=_no_hash(before),
              after=_no_hash(snapshot(member)))
        if pw:
            staff_login.set_password(session, operator(), member, pw, now)
        login_name = member.login
        user = session.get(WechatUser, openid)
        session.commit()
    typer.echo(f"staff {openid} ({role}) saved, console login {login_name}")
    if user is not None and user.customer_id is not None:
        typer.echo(f"warning: {openid} is also bound to a customer; every message from it "
                   "starting with # is now a staff command", err=True)


@app.command("invite")
def staff_invite(name: str = typer.Option(..., "--name"),
                 role: str = typer.Option(..., "--role", help="specialist | admin")) -> None:
    """Print a one-time code (valid 24 hours); the new staff member sends `#注册 <code>`
    from their own WeChat, which links that openid."""
    from datetime import datetime

    from bot.domain.staff_desk import INVITE_HOURS, create_invite

    if role not in STAFF_ROLES:
        raise typer.BadParameter("role must be specialist or admin")
    if not name.strip() or len(name) > 64:
        raise typer.BadParameter("name must be 1-64 characters")
    s = settings()
    with open_session(s) as session:
        code, invite = create_invite(session, s.secret_key, name, role, datetime.now(s.tz),
                                     who=operator())
        session.commit()
    typer.echo(f"invitation for {name.strip()} ({role}), valid {INVITE_HOURS} hours "
               f"(until {shown(invite.expires_at, s)}), one use:\n"
               f"  #注册 {code}\n"
               "Ask them to send that line to the service account from their own WeChat.")


@app.command("list")
def staff_list() -> None:
    """List staff accounts."""
    from sqlmodel import select

    from models import Staff

    s = settings()
    with open_session(s) as session:
        rows = session.exec(select(Staff).order_by(Staff.role, Staff.name)).all()
    for m in rows:
        typer.echo(f"{m.openid}\t{m.role}\t{m.name}\t{m.login or '-'}\t"
                   f"{'password' if m.password_hash else '-'}")
    if not rows:
        typer.echo("no staff yet: python main.py staff add OPENID --name NAME --role specialist")


@app.command("remove")
def staff_remove(openid: str) -> None:
    """Remove a staff account (its console sessions end at once)."""
    from datetime import datetime

    from bot.domain import staff_login
    from models import Staff

    s = settings()
    with open_session(s) as session:
        member = session.get(Staff, openid)
        if member is None:
            typer.echo(f"no staff account {openid}", err=True)
            raise typer.Exit(1)
        staff_login.remove_staff(session, operator(), member, datetime.now(s.tz))
        session.commit()
    typer.echo(f"staff {openid} removed")


@app.command("passwd")
def staff_passwd(openid: str, remove: bool = typer.Option(
        False, "--remove", help="Remove the console password instead (no sign-in).")) -> None:
    """Set a staff member's console password (prompted); every console session of theirs
    ends."""
    from datetime import datetime

    from bot.domain import staff_login
    from models import Staff

    s = settings()
    pw = None if remove else read_password(True)
    with open_session(s) as session:
        member = session.get(Staff, openid)
        if member is None:
            typer.echo(f"no staff account {openid}", err=True)
            raise typer.Exit(1)
        staff_login.set_password(session, operator(), member, pw, datetime.now(s.tz))
        login_name = member.login
        session.commit()
    typer.echo(f"password of {openid} {'removed' if remove else 'set'} (console login "
               f"{login_name}); their console sessions have ended")
