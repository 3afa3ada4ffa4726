"""What a running bot holds: settings, the database, the rules, WeChat's API client and
crypto, the SMS provider and the executor for outbound calls. Handlers, the CLI, jobs and
the message pipeline all reach the world through one `Services`."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import cached_property

from sqlalchemy import Engine

from bot.infra.config import Settings
from bot.infra.db import make_engine
from bot.infra.sms import make_sms
from bot.infra.wechat_api import make_client, make_crypto

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings, rules, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.database_url)
        with self.engine.connect() as conn:  # fail fast, and warm the pool
            conn.exec_driver_sql("SELECT 1")
        self.crypto = make_crypto(settings)
        self.rules = rules  # the programme's rules (bot.domain.rules.Rules), checked at start
        # Outbound calls (SMS, customer-service messages) never hold up message handling.
        self.io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bot-io")

    @cached_property
    def wechat(self):
        return make_client(self.settings)

    @cached_property
    def sms(self):
        return make_sms(self.settings)

    def now(self) -> datetime:
        return datetime.now(self.settings.tz)

    def submit(self, action) -> None:
        """Run an outbound call on the I/O executor, logging (never raising) its failure."""
        self.io.submit(_logged, action)

    def send_text(self, openid: str, text: str) -> None:
        try:
            self.wechat.message.send_text(openid, text)
        except Exception:
            log.exception("customer-service message to %s failed", openid[:6] + "…")

    def close(self) -> None:
        self.io.shutdown(wait=True)
        self.engine.dispose()


def _logged(action) -> None:
    try:
        action()
    except Exception:
        log.exception("deferred action failed")
