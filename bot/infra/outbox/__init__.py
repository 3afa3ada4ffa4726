"""The outbox: every message to a customer is a `notification` row, written in the
transaction that causes it, and sent exactly once by the dispatcher below.

Enqueue (`enqueue`): INSERT … ON CONFLICT (dedupe_key) DO NOTHING, so a doubled job or a
replayed message queues nothing twice.

Claim (`claim`): rows due (pending and past `next_attempt_at`, or left in `sending` by a
worker whose lease ran out) are switched to `sending` with a lease, in one statement:
`FOR UPDATE SKIP LOCKED` on PostgreSQL (several workers never claim the same row), the one
writer of SQLite (BEGIN IMMEDIATE, see bot.infra.db) elsewhere. Each claim increments
`tries`, which fences the marks: a worker whose lease ran out and whose row was claimed
again cannot mark it any more.

Send and mark (`Dispatcher`): concurrently under a rate limit; WeChat's 45009, -1, network
errors, timeouts and 5xx are retried with exponential backoff and jitter (`backoff`); after
OUTBOX_MAX_TRIES the row is dead. A crash between a send and its mark leaves the row in
`sending`; it is claimed again when the lease (OUTBOX_LEASE_SECONDS, well below the ten
minutes WeChat de-duplicates a template's `client_msg_id` and a mass send's
`clientmsgid`) has run out, and re-sent with the same id.

This module decides how to send, never what: bot.domain.notify writes the rows, and gives
the dispatcher a `prepare` hook for rows written by set-based SQL (tier changes).

A package: the queue store (`queue`) and the dispatcher (`dispatcher`);
`from bot.infra import outbox` and `outbox.<name>` keep working.
"""
from __future__ import annotations

from bot.infra.outbox.dispatcher import Dispatcher, RateLimit
from bot.infra.outbox.queue import (OUTBOX, USERS, PENDING, SENDING, SENT, DEAD, DROPPED, EXPIRED,
                                    STATUSES, WECHAT, SMS, CS_KINDS, CS_WINDOW, CS_LIMIT,
                                    RETRY_CODES, WINDOW_CODES, UNSUBSCRIBED, MESSAGE_KEYS, SEALED,
                                    SEAL_PURPOSE, Outcome, backoff, claim, client_msg_id,
                                    drop_pending, enqueue, epoch, listing, mark, record_delivery,
                                    retry)
