"""The one place a process's `Services` is built (the composition root): the settings, the
rules checked at start, and the domain's outbox hooks handed to it explicitly. The app
factory (bot.app), the scheduler process and the CLI's jobs all build theirs here, so no
module patches another's globals at start-up."""
from __future__ import annotations

from sqlalchemy import Engine

from bot.domain import notify
from bot.domain.rules import load_rules, with_settings
from bot.infra.config import Settings
from bot.infra.services import Services


def build_services(settings: Settings, *, rules=None, engine: Engine | None = None) -> Services:
    """`Services` for `settings`: the rules (rules.toml, validated, with the settings that
    override a rule: bot.domain.rules.OVERRIDES), the message templates
    and settings the outbox's rows need (`notify.configure`), and the dispatcher's hook for
    rows written without a message (`notify.prepare`)."""
    rules = with_settings(rules if rules is not None else load_rules(settings.rules_file),
                          settings)  # a setting given overrides its rule
    return Services(settings, rules, engine=engine,
                    notify=notify.configure(settings, rules), outbox_prepare=notify.prepare)
