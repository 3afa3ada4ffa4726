"""The command line (`python main.py …`); the public doors are listed in README.md.

One module per sub-app, each calling the domain functions the `#` staff commands and the
console call: `db`, `demo`, `importing` (import), `tiers`, `jobs` (and `scheduler`),
`staff`, `bindings` (bind, unbind), `messages`, `privacy`, `outbox`, `audit`, `faq`,
`calendar`, `wechat` (tags, menu), `serve` and `chat`; `common` holds what they share."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from bot.cli import (audit, bindings, calendar, chat, db, demo, faq, importing, jobs, messages,
                     outbox, privacy, serve, staff, tiers, wechat)
from bot.cli.common import (example_values, is_demo, operator, parse_day,  # noqa: F401
                            refuse_future_without_yes, settings, shown)
from bot.cli.db import prepare_database, upgrade_database  # noqa: F401
from bot.cli.serve import refuse_demo_settings, serving_banner  # noqa: F401
from bot.cli.wechat import wechat_settings  # noqa: F401
from bot.infra.config import ROOT

app = typer.Typer(help="VIP WeChat service-account bot.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.command()(serve.serve)
app.command()(chat.chat)
app.command()(bindings.bind)
app.command()(bindings.unbind)
app.command("scheduler")(jobs.scheduler)
for name, sub in (("outbox", outbox.app), ("faq", faq.app), ("menu", wechat.menu_app),
                  ("audit", audit.app), ("tags", wechat.tags_app), ("calendar", calendar.app),
                  ("db", db.app), ("demo", demo.app), ("import", importing.app),
                  ("tiers", tiers.app), ("staff", staff.app), ("jobs", jobs.app),
                  ("messages", messages.app), ("privacy", privacy.app)):
    app.add_typer(sub, name=name)


def main() -> None:
    os.chdir(ROOT)
    sys.path.insert(0, str(Path(ROOT)))
    app()
