"""What every command shares: the checked settings, the operator's name for the audit, how an
instant and a date are read and printed, the demo's settings and the one-line stop."""
from __future__ import annotations

import typer

from bot.infra.config import ROOT, Settings, SettingsError, load_settings


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


def fail(setting: str, what: str) -> None:
    """Stop start-up with one line naming the setting (exit 2)."""
    typer.echo(f"Setting {setting}: {what}", err=True)
    raise typer.Exit(2)


def shown(value, s: Settings, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An instant as the CLI prints it: the wall clock of TIMEZONE (the one conversion,
    bot.infra.texts.local)."""
    from bot.infra.texts import local

    return local(value, s.tz).strftime(fmt)


def shown_record(raw: str | None, s: Settings) -> str:
    """A stored JSON record (the audit's before and after) as the CLI prints it: its instants
    in TIMEZONE (the one conversion, bot.infra.texts.local_record, as the console shows it);
    nothing: "-"."""
    from bot.infra.texts import local_record

    return local_record(raw, s.tz) or "-"


def parse_day(value: str | None, s: Settings):
    """--date YYYY-MM-DD, or today in the programme's time zone."""
    from datetime import date, datetime

    if not value:
        return datetime.now(s.tz).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def operator() -> str:
    """Who runs the command: the operating-system user, the actor of the audit rows the CLI
    writes (in the one audit log `audit list` shows)."""
    import getpass

    try:
        return (getpass.getuser() or "unknown")[:64]
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"


def read_password(ask: bool) -> str | None:
    """A console password typed twice at a hidden prompt (with `ask`), at least 8 long."""
    from bot.domain.staff_login import LoginRefused, check_new_password

    if not ask:
        return None
    pw = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        return check_new_password(pw)
    except LoginRefused:
        typer.echo("the password needs at least 8 characters" if len(pw) < 8 else
                   "the password may have at most 200 characters", err=True)
        raise typer.Exit(2) from None


FUTURE_NEEDS_YES = ("tiers", "daily")  # jobs that evaluate tiers: a future date may downgrade


def refuse_future_without_yes(day, s: Settings, yes: bool) -> None:
    """A tier evaluation as of a date after today (a review of live data) runs only with
    --yes: `tiers recompute` and `jobs run tiers|daily` alike."""
    from datetime import datetime

    if day > datetime.now(s.tz).date() and not yes:
        typer.echo(f"{day} is after today: evaluating live data as of a future date may run a "
                   "review and downgrade customers. Add --yes to run it.", err=True)
        raise typer.Exit(2)


EXAMPLE_FILE = ROOT / ".env.example"


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


def is_demo(s: Settings) -> bool:
    """The demo's settings: WECHAT_DOUBLE, or the AppSecret placeholder of .env.example
    (which WeChat would refuse anyway)."""
    return s.wechat_double or s.wechat_app_secret == example_values().get("WECHAT_APP_SECRET")
