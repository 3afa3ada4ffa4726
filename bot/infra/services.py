"""What a running bot holds: settings, the database, the rules, WeChat's API client and
crypto, the SMS provider and the lanes for outbound calls. Handlers, the CLI, jobs and the
message pipeline all reach the world through one `Services`.

Outbound calls never hold up message handling, and WeChat's API and the SMS gateway have a
lane each (`wechat_io`, `sms_io`): bounded threads and a bounded queue, so a WeChat API that
hangs cannot delay a binding code, nor the other way round. Every call has connect and read
timeouts (OUTBOUND_CONNECT_TIMEOUT, OUTBOUND_READ_TIMEOUT).
"""
from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import cached_property

from sqlalchemy import Engine

from bot.infra import redact, texts
from bot.infra.config import Settings
from bot.infra.db import engine_for
from bot.infra.sms import make_sms
from bot.infra.wechat_api import make_client, make_crypto

log = logging.getLogger(__name__)


class Lane:
    """A bounded executor: `workers` threads and at most `queue_size` calls waiting. A call
    offered to a full lane is refused and logged, never waited on."""

    def __init__(self, name: str, workers: int, queue_size: int) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(workers + queue_size)
        self.capacity = workers + queue_size
        self.refused = 0

    def submit(self, action, what: str = "call") -> Future | None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            log.error("%s lane full (%d calls running or waiting): %s dropped", self.name,
                      self.capacity, what)
            return None
        try:
            # The caller's log context (the message's ids) goes along.
            future = self._pool.submit(contextvars.copy_context().run, _logged, action,
                                       self.name, what)
        except RuntimeError:  # shut down
            self._slots.release()
            log.warning("%s lane closed: %s dropped", self.name, what)
            return None
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


class QueuedSms:
    """The SMS provider, behind the `sms_io` lane: `send` hands the text over and returns at
    once. Everything else (`sends_codes`, the demo provider's `sent`) is the provider's."""

    def __init__(self, provider, lane: Lane) -> None:
        self.provider, self.lane = provider, lane

    def send(self, phone: str, text: str) -> None:
        self.lane.submit(lambda: self.provider.send(phone, text), "SMS")

    def __getattr__(self, name):
        return getattr(self.provider, name)


class Services:
    def __init__(self, settings: Settings, rules, *, engine: Engine | None = None,
                 notify=None, outbox_prepare=None) -> None:
        """Built once per process by `bot.wiring.build_services`, which hands in the
        domain's side of the outbox: `notify` (its configuration: templates, links) and
        `outbox_prepare` (the dispatcher's hook for rows written without a message)."""
        self.settings = settings
        self.notify = notify
        self.outbox_prepare = outbox_prepare
        texts.set_timezone(settings.tz)  # every time a person reads is TIMEZONE
        texts.set_rules(rules)  # every template reads the rules as `rules`
        redact.install(settings.wechat_app_secret, settings.sms_gateway_token,
                       settings.wechat_token, settings.wechat_encoding_aes_key,
                       settings.tencent_secret_key)
        self.engine = engine or engine_for(settings)
        with self.engine.connect() as conn:  # fail fast, and warm the pool
            conn.exec_driver_sql("SELECT 1")
        self.crypto = make_crypto(settings)
        self.rules = rules  # the programme's rules (bot.domain.rules.Rules), checked at start
        self.wechat_io = Lane("wechat-io", settings.wechat_io_workers,
                              settings.outbound_queue_size)
        self.sms_io = Lane("sms-io", settings.sms_io_workers, settings.outbound_queue_size)

    @cached_property
    def wechat(self):
        return make_client(self.settings, self.engine)

    @cached_property
    def sms(self) -> QueuedSms:
        return QueuedSms(make_sms(self.settings), self.sms_io)

    @cached_property
    def dispatcher(self):
        """The outbox dispatcher of this process (bot.infra.outbox), with the domain's
        `outbox_prepare` hook (bot.domain.notify.prepare, handed in by bot.wiring)."""
        from bot.infra.outbox import Dispatcher

        return Dispatcher(self.engine, self.settings, self.wechat, self.sms.provider,
                          prepare=self.outbox_prepare)

    def kick_outbox(self, rows: list[tuple[int, str]]) -> None:
        """Send these just-committed outbox rows now, WeChat's and SMS on their own lanes
        (a WeChat API that hangs never delays a binding code). What fails here is retried
        by the dispatcher's sweep."""
        for channel, lane in (("wechat", self.wechat_io), ("sms", self.sms_io)):
            ids = [i for i, c in rows if c == channel]
            if ids:
                lane.submit(lambda ids=ids: self.dispatcher.send_ids(ids), f"outbox {channel}")

    def now(self) -> datetime:
        return datetime.now(self.settings.tz)

    def submit(self, action, what: str = "WeChat call") -> Future | None:
        """Run a call to WeChat's API on the `wechat_io` lane, logging (never raising) its
        failure; None when the lane is full (logged)."""
        return self.wechat_io.submit(action, what)

    def run_after_commit(self, action) -> None:
        """Run one of a handler's after-commit actions. They only hand work to a lane
        (`services.sms.send`, `services.send_text`), so they run right here, in order."""
        _logged(action, "after-commit", "action")

    def send_text(self, openid: str, text: str) -> Future | None:
        """A customer-service message, sent on the `wechat_io` lane."""
        return self.submit(lambda: self.send_text_now(openid, text),
                           f"customer-service message to {openid[:6]}…")

    def send_text_now(self, openid: str, text: str) -> None:
        self.wechat.message.send_text(openid, text)

    def close(self) -> None:
        self.wechat_io.shutdown(wait=True)
        self.sms_io.shutdown(wait=True)
        if "dispatcher" in self.__dict__:
            self.dispatcher.close()
        self.engine.dispose()


def _logged(action, lane: str, what: str) -> None:
    try:
        action()
    except Exception:
        log.exception("%s: %s failed", lane, what)
