"""The command line (`python main.py …`); the public doors are listed in README.md."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from bot.domain.vocab import STAFF_ROLES
from bot.infra.config import ROOT, Settings, SettingsError, load_settings

app = typer.Typer(help="VIP WeChat service-account bot.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data.", no_args_is_help=True)
import_app = typer.Typer(help="Import CSV files (UTF-8, header row).", no_args_is_help=True)
tiers_app = typer.Typer(help="The tier engine.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled jobs, run by hand.", no_args_is_help=True)
messages_app = typer.Typer(help="Messages customers left for a human agent.", no_args_is_help=True)
privacy_app = typer.Typer(help="Personal data requests (PIPL).", no_args_is_help=True)
outbox_app = typer.Typer(help="The outbox of messages to customers.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
calendar_app = typer.Typer(help="China's working-day calendar.", no_args_is_help=True)
menu_app = typer.Typer(help="The service account's menu.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of staff actions.", no_args_is_help=True)
faq_app = typer.Typer(help="The FAQ: what customers asked that it could not answer.",
                      no_args_is_help=True)
app.add_typer(faq_app, name="faq")
tags_app = typer.Typer(help="Tier tags on WeChat (for broadcasts).", no_args_is_help=True)
app.add_typer(menu_app, name="menu")
app.add_typer(audit_app, name="audit")
app.add_typer(tags_app, name="tags")
app.add_typer(calendar_app, name="calendar")
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(import_app, name="import")
app.add_typer(tiers_app, name="tiers")
app.add_typer(staff_app, name="staff")
app.add_typer(jobs_app, name="jobs")
app.add_typer(messages_app, name="messages")
app.add_typer(privacy_app, name="privacy")


def settings() -> Settings:
    """Settings and the rules file, both checked: a bad one stops here with one line."""
    from bot.domain.rules import RulesError, load_rules

    try:
        s = load_settings()
        load_rules(s.rules_file)
        return s
    except (SettingsError, RulesError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def shown(value, s: Settings, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An instant as the CLI prints it: the wall clock of TIMEZONE (the one conversion,
    bot.infra.texts.local)."""
    from bot.infra.texts import local

    return local(value, s.tz).strftime(fmt)


def upgrade_database(s: Settings) -> tuple[str | None, str]:
    """Apply every migration; return the revision before and after."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from bot.infra.db import make_engine

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "models" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", s.database_url.replace("%", "%%"))

    def current() -> str | None:
        engine = make_engine(s.database_url, pool_size=0)  # creates the SQLite file's folder
        try:
            with engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        finally:
            engine.dispose()

    before = current()
    engine = make_engine(s.database_url, pool_size=0)
    try:
        with engine.connect() as conn:  # the bot's engine (SQLite's pragmas, BEGIN IMMEDIATE)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    finally:
        engine.dispose()
    return before, current()


def fail(setting: str, what: str) -> None:
    """Stop start-up with one line naming the setting (exit 2)."""
    typer.echo(f"Setting {setting}: {what}", err=True)
    raise typer.Exit(2)


def prepare_database(s: Settings, *, redis: bool = False) -> tuple[str | None, str]:
    """Migrate the database and check that it takes writes (and that Redis answers, with
    `redis`): a failure stops the command with one line naming the setting, never a
    traceback. Returns the schema revision before and after."""
    from sqlalchemy import make_url

    from bot.infra import health
    from bot.infra.db import make_engine

    where = make_url(s.database_url).render_as_string(hide_password=True)
    try:
        revisions = upgrade_database(s)
    except Exception as exc:
        fail("DATABASE_URL", f"cannot use the database {where}: {health.one_line(exc)}")
    engine = make_engine(s.database_url, pool_size=0) if not s.is_sqlite else \
        make_engine(s.database_url)
    try:
        problem = health.check_writable(engine)
    finally:
        engine.dispose()
    if problem:
        fail("DATABASE_URL", f"the database {where} is {problem}")
    if redis and s.redis_url:
        client = health.redis_client(s.redis_url)
        try:
            problem = health.check_redis(client)
        finally:
            client.close()
        if problem:
            fail("REDIS_URL", f"Redis at {make_url_redis(s.redis_url)} is {problem}")
    return revisions


def make_url_redis(url: str) -> str:
    """A Redis URL without its password."""
    import re

    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


EXAMPLE_FILE = ROOT / ".env.example"
# Settings whose .env.example values are placeholders: `serve` refuses them outside --demo.
PLACEHOLDER_SETTINGS = ("WECHAT_TOKEN", "WECHAT_ENCODING_AES_KEY", "WECHAT_APP_SECRET", "SECRET_KEY")
DEMO_SMS_PROVIDERS = ("log", "none")


def example_values() -> dict[str, str]:
    """NAME=value pairs of .env.example."""
    values = {}
    try:
        lines = EXAMPLE_FILE.read_text(encoding="utf-8").splitlines()
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def refuse_demo_settings(s: Settings) -> None:
    """Production (serve without --demo) refuses the demo's settings, naming the first."""
    example = example_values()
    for name in PLACEHOLDER_SETTINGS:
        if example.get(name) and getattr(s, name.lower()) == example[name]:
            fail(name, "is still the placeholder from .env.example; set your service "
                       "account's value (or run `serve --demo`)")
    if s.sms_provider in DEMO_SMS_PROVIDERS:
        fail("SMS_PROVIDER", f"{s.sms_provider} is for the demo only (binding codes "
                             f"{'go to the log' if s.sms_provider == 'log' else 'are not sent'}); "
                             f"set SMS_PROVIDER=http and SMS_GATEWAY_URL (or run `serve --demo`)")
    if s.wechat_double:
        fail("WECHAT_DOUBLE", "is for the demo only; set WECHAT_DOUBLE=false (or run `serve --demo`)")


def is_demo(s: Settings) -> bool:
    """The demo's settings: WECHAT_DOUBLE, or the AppSecret placeholder of .env.example
    (which WeChat would refuse anyway)."""
    return s.wechat_double or s.wechat_app_secret == example_values().get("WECHAT_APP_SECRET")


_local_double: str | None = None


def wechat_settings(s: Settings) -> Settings:
    """The settings of a command that calls WeChat's API. On the demo's settings the calls
    go to the demo's WeChat double, as the server's do (its state is the demo database's,
    so it is the very double `serve --demo` mounts), never to api.weixin.qq.com. Call it
    after `prepare_database`."""
    global _local_double
    if not is_demo(s):
        return s
    if _local_double is None:
        from bot.infra.db import make_engine
        from bot.wechat.double import serve_local

        _local_double = serve_local(s.wechat_app_id, s.wechat_app_secret,
                                    make_engine(s.database_url))
        typer.echo("demo settings: WeChat's API is the demo's local double, not "
                   "api.weixin.qq.com", err=True)
    return s.model_copy(update={"wechat_api_base_url": _local_double})


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (creates the SQLite file under data/ on first run)."""
    s = settings()
    before, after = prepare_database(s)
    if before == after:
        typer.echo(f"database is up to date (revision {after})")
    elif before is None:
        typer.echo(f"created the database schema (revision {after})")
    else:
        typer.echo(f"upgraded the database from revision {before} to {after}")


@demo_app.command("load")
def demo_load(if_empty: bool = typer.Option(False, "--if-empty",
                                            help="Do nothing when customers exist.")) -> None:
    """Load demo customers (one per tier), family members and policies."""
    from bot.demo import load_demo

    s = settings()
    prepare_database(s)
    typer.echo(load_demo(s, if_empty=if_empty))


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000,
          workers: int = typer.Option(1, min=1, max=64),
          demo: bool = typer.Option(False, help="Mount a local WeChat API double and use it; "
                                                "allows the demo's settings.")) -> None:
    """Serve /wechat. Without --demo, the placeholders of .env.example and the demo SMS
    providers (log, none) are refused."""
    import uvicorn

    if demo:
        os.environ["WECHAT_DOUBLE"] = "1"
        loopback = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        os.environ["WECHAT_API_BASE_URL"] = f"http://{loopback}:{port}/wechat-double"
    s = settings()
    if not demo:
        refuse_demo_settings(s)
    if workers > 1 and s.is_sqlite and not s.redis_url:
        typer.echo("SQLite runs one worker; set DATABASE_URL to PostgreSQL (or REDIS_URL) "
                   "for --workers > 1", err=True)
        raise typer.Exit(2)
    prepare_database(s, redis=True)
    if s.metrics_enabled:  # PROMETHEUS_MULTIPROC_DIR: only the running processes' files
        from bot.infra.metrics import clean_multiproc_dir

        clean_multiproc_dir()
    typer.echo(serving_banner(host, port, demo, admin=s.admin_enabled))
    from bot.app import server_options

    uvicorn.run("bot.asgi:make", factory=True, host=host, port=port, workers=workers,
                **server_options(s))


def serving_banner(host: str, port: int, demo: bool, *, admin: bool = False) -> str:
    """What `serve` prints at start: every address it serves, and how to talk to it; in
    the demo first the simulator and the console with the demo admin's login."""
    base = f"http://{host}:{port}"
    lines = []
    if demo:
        lines.append(f"Try the bot in a browser: {base}/simulator")
    if admin:
        login = ""
        if demo:
            from bot.demo import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD

            login = f"  (demo admin: {DEMO_ADMIN_LOGIN} / {DEMO_ADMIN_PASSWORD})"
        lines.append(f"Staff console: {base}/admin{login}")
    lines += [f"Serving WeChat's server URL at {base}/wechat",
              f"  liveness  {base}/healthz",
              f"  readiness {base}/readyz"]
    if demo:
        lines.append(f"  WeChat API double (demo) {base}/wechat-double")
    if host in ("0.0.0.0", "::"):
        lines.append("  (every interface: use this machine's address from elsewhere)")
    chat_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/wechat"
    lines.append(f"Talk to it from another terminal: {sys.executable} main.py chat "
                 f"--url {chat_url} [--openid o_demo_gold]")
    return "\n".join(lines)


@app.command()
def chat(openid: str = typer.Option("", help="Whose account to speak from (default: new)."),
         url: str = "http://127.0.0.1:8000/wechat",
         mode: str = typer.Option("", help="plain | compatible | safe (default: the "
                                           "WECHAT_MESSAGE_MODE setting, as the bot expects)"),
         subscribe: bool = typer.Option(False, "--subscribe",
                                        help="Start with a subscribe event even for someone "
                                             "who already follows (a new follower gets one "
                                             "anyway).")) -> None:
    """Chat with a running bot from the terminal; each line is signed as WeChat signs it.
    A new follower (no --openid, or one the bot's database does not know as following)
    starts with the subscribe event WeChat sends on 关注."""
    from bot.wechat.chat import follows, random_openid, run_chat

    if mode not in ("", "plain", "compatible", "safe"):
        raise typer.BadParameter("mode must be plain, compatible or safe")
    s = settings()
    mode = mode or s.wechat_message_mode
    if mode != "plain" and not s.wechat_encoding_aes_key:
        typer.echo("Setting WECHAT_ENCODING_AES_KEY is required for safe mode", err=True)
        raise typer.Exit(2)
    new = not openid or follows(s, openid) is False
    raise typer.Exit(run_chat(s, url, openid or random_openid(), mode, subscribe=subscribe or new))


def parse_day(value: str | None, s: Settings):
    """--date YYYY-MM-DD, or today in the programme's time zone."""
    from datetime import date, datetime

    if not value:
        return datetime.now(s.tz).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _import(kind: str, file: Path, skip_bad: bool, *, exit: bool = True):
    from bot.domain.importer import import_csv

    s = settings()
    prepare_database(s)
    report = import_csv(s, kind, file, skip_bad=skip_bad, progress=sys.stderr.isatty(),
                        actor=operator())
    typer.echo(report.render())
    if exit:
        raise typer.Exit(1 if report.rejected else 0)
    return report


@import_app.command("policies")
def import_policies(file: Path = typer.Argument(..., help="CSV of policies"),
                    skip_bad: bool = typer.Option(False, "--skip-bad",
                                                  help="Import the good rows anyway.")) -> None:
    """Upsert policies (and their holders) by policy_no; all or nothing unless --skip-bad."""
    _import("policies", file, skip_bad)


@import_app.command("family")
def import_family(file: Path = typer.Argument(..., help="CSV of family members"),
                  skip_bad: bool = typer.Option(False, "--skip-bad",
                                                help="Import the good rows anyway.")) -> None:
    """Upsert policyholders' immediate family members."""
    _import("family", file, skip_bad)


@import_app.command("institutions")
def import_institutions(file: Path = typer.Argument(..., help="CSV of institutions"),
                        skip_bad: bool = typer.Option(False, "--skip-bad",
                                                      help="Import the good rows anyway.")) -> None:
    """Upsert institutions by code (code, name, city, address, kind, services, phone[, closed])."""
    _import("institutions", file, skip_bad)


@calendar_app.command("check")
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


@tiers_app.command("recompute")
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
    _sync_tags(s)


def _session(s: Settings):
    from sqlmodel import Session

    from bot.infra.db import engine_for

    prepare_database(s)
    return Session(engine_for(s, pool_timeout=30), expire_on_commit=False)


def operator() -> str:
    """Who runs the command: the operating-system user, the actor of the audit rows the CLI
    writes (in the one audit log `audit list` shows)."""
    import getpass

    try:
        return (getpass.getuser() or "unknown")[:64]
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"


@app.command()
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
        report = _import("bindings", file, skip_bad, exit=False)
        if report.written and report.inserted + report.updated:
            _sync_tags(settings())  # the new users join their tags
        raise typer.Exit(1 if report.rejected else 0)
    if openid is None or id_number is None:
        raise typer.BadParameter("give OPENID and ID_NUMBER, or --file FILE.csv")
    s = settings()
    with _session(s) as session:
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
    _sync_tags(s, [openid])  # into the tier's WeChat tag at once, as binding in chat does


@app.command()
def unbind(openid: str) -> None:
    """Detach a WeChat openid from its policyholder."""
    from datetime import datetime

    from bot.domain import accounts
    from bot.domain.staff_desk import audit
    from models import WechatUser

    s = settings()
    with _session(s) as session:
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
    _sync_tags(s, [openid])


def _sync_tags(s: Settings, openids: list[str] | None = None) -> str:
    """Tier tags on WeChat in step with tiers (all bound users, or these); never fails the
    command: a WeChat error is reported and the daily job retries."""
    from bot.domain.broadcasts import sync_tags
    from bot.domain.rules import load_rules
    from bot.infra.db import engine_for
    from bot.infra.wechat_api import make_client

    s = wechat_settings(s)
    engine = engine_for(s, pool_timeout=30)
    try:
        text = sync_tags(engine, make_client(s, engine), load_rules(s.rules_file), openids).render()
    except Exception as exc:
        text = f"tags: not synced ({exc}); the daily tier job retries"
    typer.echo(text)
    return text


def _read_password(ask: bool) -> str | None:
    if not ask:
        return None
    pw = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(pw) < 8:
        typer.echo("the password needs at least 8 characters", err=True)
        raise typer.Exit(2)
    return pw


@staff_app.command("add")
def staff_add(openid: str, name: str = typer.Option(..., "--name"),
              role: str = typer.Option(..., "--role", help="specialist | admin"),
              login: str = typer.Option(None, "--login",
                                        help="Sign-in name for the web console (default: "
                                             "from the name)."),
              password: bool = typer.Option(False, "--password",
                                            help="Also set a console password (prompted).")) -> None:
    """Register a health specialist or admin by their WeChat openid."""
    from datetime import datetime

    from sqlmodel import select

    from bot.domain import staff_login
    from models import Staff

    if role not in STAFF_ROLES:
        raise typer.BadParameter("role must be specialist or admin")
    if not name.strip() or len(name) > 64 or not openid.strip() or len(openid) > 64:
        raise typer.BadParameter("openid and name must be 1-64 characters")
    try:
        wanted = staff_login.check_login(login) if login else None
    except staff_login.LoginRefused:
        raise typer.BadParameter("--login: 2-64 letters, digits, _ . or -") from None
    s = settings()
    pw = _read_password(password)
    from bot.domain.staff_desk import audit, snapshot
    from models import WechatUser

    with _session(s) as session:
        now = datetime.now(s.tz)
        found = session.get(Staff, openid)
        before = snapshot(found)
        if wanted:
            holder = session.exec(select(Staff).where(Staff.login == wanted)).first()
            if holder is not None and holder.openid != openid:
                typer.echo(f"the login {wanted} is taken by {holder.openid}", err=True)
                raise typer.Exit(1)
        member = found or Staff(openid=openid, name=name, role=role, created_at=now)
        member.name, member.role = name.strip(), role
        if wanted or member.login is None:
            member.login = wanted or staff_login.free_login(
                session, staff_login.default_login(member.name) or "staff", openid)
        session.add(member)
        session.flush()
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


def _no_hash(row: dict | None) -> dict | None:
    return None if row is None else {**row, "password_hash": bool(row.get("password_hash"))}


@staff_app.command("invite")
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
    with _session(s) as session:
        code, invite = create_invite(session, s.secret_key, name, role, datetime.now(s.tz),
                                     who=operator())
        session.commit()
    typer.echo(f"invitation for {name.strip()} ({role}), valid {INVITE_HOURS} hours "
               f"(until {shown(invite.expires_at, s)}), one use:\n"
               f"  #注册 {code}\n"
               "Ask them to send that line to the service account from their own WeChat.")


@staff_app.command("list")
def staff_list() -> None:
    """List staff accounts."""
    from sqlmodel import select

    from models import Staff

    s = settings()
    with _session(s) as session:
        rows = session.exec(select(Staff).order_by(Staff.role, Staff.name)).all()
    for m in rows:
        typer.echo(f"{m.openid}\t{m.role}\t{m.name}\t{m.login or '-'}\t"
                   f"{'password' if m.password_hash else '-'}")
    if not rows:
        typer.echo("no staff yet: python main.py staff add OPENID --name NAME --role specialist")


@staff_app.command("remove")
def staff_remove(openid: str) -> None:
    """Remove a staff account (its console sessions end at once)."""
    from datetime import datetime

    from bot.domain import staff_login
    from models import Staff

    s = settings()
    with _session(s) as session:
        member = session.get(Staff, openid)
        if member is None:
            typer.echo(f"no staff account {openid}", err=True)
            raise typer.Exit(1)
        staff_login.remove_staff(session, operator(), member, datetime.now(s.tz))
        session.commit()
    typer.echo(f"staff {openid} removed")


@staff_app.command("passwd")
def staff_passwd(openid: str, remove: bool = typer.Option(
        False, "--remove", help="Remove the console password instead (no sign-in).")) -> None:
    """Set a staff member's console password (prompted); every console session of theirs
    ends."""
    from datetime import datetime

    from bot.domain import staff_login
    from models import Staff

    s = settings()
    pw = None if remove else _read_password(True)
    with _session(s) as session:
        member = session.get(Staff, openid)
        if member is None:
            typer.echo(f"no staff account {openid}", err=True)
            raise typer.Exit(1)
        staff_login.set_password(session, operator(), member, pw, datetime.now(s.tz))
        login_name = member.login
        session.commit()
    typer.echo(f"password of {openid} {'removed' if remove else 'set'} (console login "
               f"{login_name}); their console sessions have ended")


FUTURE_NEEDS_YES = ("tiers", "daily")  # jobs that evaluate tiers: a future date may downgrade


def refuse_future_without_yes(day, s: Settings, yes: bool) -> None:
    """A tier evaluation as of a date after today (a review of live data) runs only with
    --yes: `tiers recompute` and `jobs run tiers|daily` alike."""
    from datetime import datetime

    if day > datetime.now(s.tz).date() and not yes:
        typer.echo(f"{day} is after today: evaluating live data as of a future date may run a "
                   "review and downgrade customers. Add --yes to run it.", err=True)
        raise typer.Exit(2)


@jobs_app.command("run")
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


@outbox_app.command("list")
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


@outbox_app.command("retry")
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


@app.command("scheduler")
def scheduler_cmd() -> None:
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


@messages_app.command("list")
def messages_list(open_only: bool = typer.Option(False, "--open", help="Only unanswered ones.")) -> None:
    """Messages left after 人工 outside service hours, oldest first."""
    from bot.domain.messages import list_messages

    s = settings()
    with _session(s) as session:
        rows = list_messages(session, open_only=open_only)
        for m in rows:
            state = f"closed {shown(m.closed_at, s)} by {m.closed_by}" if m.closed_at else "open"
            typer.echo(f"#{m.id}\t{shown(m.created_at, s)}\t{m.openid}\t{state}\t{m.text}")
    if not rows:
        typer.echo("no messages" + (" open" if open_only else ""))


@messages_app.command("close")
def messages_close(message_id: int = typer.Argument(..., metavar="ID"),
                   by: str = typer.Option("cli", "--by", help="Who answered it.")) -> None:
    """Mark a message answered."""
    from datetime import datetime

    from bot.domain.messages import close_message

    s = settings()
    with _session(s) as session:
        msg = close_message(session, message_id, by, datetime.now(s.tz))
        if msg is None:
            typer.echo(f"no message #{message_id}", err=True)
            raise typer.Exit(1)
        session.commit()
    typer.echo(f"message #{message_id} closed")


@privacy_app.command("export")
def privacy_export(openid: str) -> None:
    """Print, as JSON, everything the bot holds about one WeChat user."""
    import json

    from datetime import datetime

    from bot.domain.privacy import export
    from bot.domain.staff_desk import audit

    s = settings()
    with _session(s) as session:
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


@tags_app.command("sync")
def tags_sync() -> None:
    """Create the tier tags on WeChat if missing and put every bound follower in the tag of
    their tier (the daily tier job does this too)."""
    s = settings()
    prepare_database(s)
    text = _sync_tags(s)
    if "not synced" in text or "error(s)" in text:
        raise typer.Exit(1)


@menu_app.command("push")
def menu_push() -> None:
    """Check the menu (menus/) against WeChat's limits and create it on WeChat."""
    from bot.infra.wechat_api import WeChatApiError, make_client
    from menus import MenuError, menu_json, validate_menu

    s = settings()
    try:
        data = validate_menu(menu_json())
    except MenuError as exc:
        typer.echo(f"menu not pushed: {exc}", err=True)
        raise typer.Exit(1) from None
    prepare_database(s)
    s = wechat_settings(s)
    from bot.infra.db import engine_for

    try:
        make_client(s, engine_for(s, pool_timeout=30)).menu.create(data)
    except WeChatApiError as exc:
        typer.echo(f"menu not pushed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"menu pushed: {len(data['button'])} buttons, "
               f"{sum(len(b['sub_button']) for b in data['button'])} entries")


@menu_app.command("show")
def menu_show() -> None:
    """Print the menu WeChat has now (menu/get)."""
    from bot.infra.wechat_api import WeChatApiError, make_client

    s = settings()
    prepare_database(s)
    s = wechat_settings(s)
    from bot.infra.db import engine_for

    try:
        got = make_client(s, engine_for(s, pool_timeout=30)).menu.get()
    except WeChatApiError as exc:
        if exc.errcode == 46003:
            typer.echo("WeChat has no menu for this account (python main.py menu push)")
            return
        typer.echo(f"cannot read the menu: {exc}", err=True)
        raise typer.Exit(1) from None
    for top in (got.get("menu") or {}).get("button", []):
        typer.echo(top.get("name", ""))
        for sub in top.get("sub_button", []):
            typer.echo(f"  {sub.get('name', '')}\t{sub.get('type', '')}\t"
                       f"{sub.get('key') or sub.get('url') or ''}")


@audit_app.command("list")
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
    with _session(s) as session:
        rows = audit_rows(session, since=day, staff=staff)
    for r in rows:
        typer.echo(f"{r.id}\t{shown(r.at, s, '%Y-%m-%d %H:%M:%S')}\t{r.staff_openid}\t{r.action}\t{r.target}"
                   f"\tbefore={r.before or '-'}\tafter={r.after or '-'}")
    if not rows:
        typer.echo("no staff actions recorded" + (f" since {since}" if since else ""))


@faq_app.command("unanswered")
def faq_unanswered(since: str = typer.Option(None, "--since", help="From YYYY-MM-DD on (local date).")) -> None:
    """Questions that got the fallback, oldest first: when (local time), the asker's tier, the
    text. Who asked is never stored."""
    from datetime import date

    from bot.domain.unanswered import list_unanswered, since_local

    s = settings()
    start = None
    if since:
        try:
            start = since_local(date.fromisoformat(since), s.tz)
        except ValueError:
            raise typer.BadParameter(f"{since!r} is not a date (YYYY-MM-DD)") from None
    with _session(s) as session:
        rows = list_unanswered(session, since=start)
    for r in rows:
        typer.echo(f"{shown(r.asked_at, s)}\t{r.tier or '-'}\t{r.text}")
    if not rows:
        typer.echo("no unanswered questions" + (f" since {since}" if since else ""))


def main() -> None:
    os.chdir(ROOT)
    sys.path.insert(0, str(Path(ROOT)))
    app()
