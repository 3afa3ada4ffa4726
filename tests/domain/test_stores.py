"""Every flavour of the pluggable stores keeps the same promises (memory and SQL always;
Redis when REDIS_URL is set, as in CI)."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlmodel import Session

from bot.conversation.stores import (MemoryDedupStore, MemoryStateStore, Record, RedisDedupStore,
                        RedisStateStore, SqlDedupStore, SqlStateStore)
from tests.conftest import REDIS_URL

FLAVOURS = ["memory", "sql"] + (["redis"] if REDIS_URL else [])


def _redis():
    import redis

    return redis.Redis.from_url(REDIS_URL), f"vipbot-test:{uuid.uuid4().hex[:8]}:"


def _states(flavour, engine):
    if flavour == "memory":
        return MemoryStateStore()
    if flavour == "sql":
        return SqlStateStore(engine)
    client, prefix = _redis()
    return RedisStateStore(client, prefix)


def _dedup(flavour, engine, ttl=60):
    if flavour == "memory":
        return MemoryDedupStore(ttl)
    if flavour == "sql":
        return SqlDedupStore(engine, ttl)
    client, prefix = _redis()
    return RedisDedupStore(client, ttl, prefix)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_state_round_trip_and_clear(flavour, engine):
    store = _states(flavour, engine)
    rec = Record("survey:name", {"name": "小王", "n": 3}, ["第二页"], 123.5)
    with Session(engine) as s:
        store.save("u1", rec, s.connection())
        s.commit()
    with Session(engine) as s:
        back = store.load("u1", s.connection())
    assert (back.state, back.data, back.pages, back.updated_at) == (
        "survey:name", {"name": "小王", "n": 3}, ["第二页"], 123.5)
    with Session(engine) as s:
        store.save("u1", Record(), s.connection())
        s.commit()
        assert store.load("u1", s.connection()) == Record()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lock_serialises_one_user(flavour, engine):
    """Two workers read-modify-write one user's counter at once: no update is lost."""
    store = _states(flavour, engine)
    errors = []

    def bump():
        try:
            for _ in range(10):
                with Session(engine) as s:
                    conn = s.connection()
                    with store.lock("u2", conn):
                        rec = store.load("u2", conn)
                        rec.data["n"] = rec.data.get("n", 0) + 1
                        rec.state = "counting:n"
                        time.sleep(0.001)
                        store.save("u2", rec, conn)
                        s.commit()
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Session(engine) as s:
        assert store.load("u2", s.connection()).data["n"] == 40


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dedup_claims_once_and_shares_the_reply(flavour, engine):
    store = _dedup(flavour, engine)
    results = []
    barrier = threading.Barrier(5)

    def claim():
        barrier.wait()
        results.append(store.claim("m:42"))

    threads = [threading.Thread(target=claim) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, False, True]
    assert store.reply("m:42") is None  # still pending
    store.complete("m:42", "")
    assert store.reply("m:42") == ""
    store.complete("m:42", "<xml>reply</xml>")
    assert store.reply("m:42") == "<xml>reply</xml>"
    assert store.claim("m:43") is True


def test_memory_dedup_forgets_after_its_window():
    store = MemoryDedupStore(ttl_seconds=30)
    assert store.claim("k")
    store._entries["k"] = (time.time() - 31, "x")
    assert store.claim("k")


def test_corrupt_record_is_a_fresh_start():
    assert Record.loads("{not json", 1.0) == Record()
    assert Record.loads('["a list"]', 1.0) == Record()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_request_pairs_remember_their_body(flavour, engine):
    """A (timestamp, nonce) is remembered with its body's digest: the same body again is a
    retry (True), another body is a replay (False); other pairs are independent."""
    store = _dedup(flavour, engine)
    assert store.request_seen("1700000000", "n1", "digest-a", 660)
    assert store.request_seen("1700000000", "n1", "digest-a", 660)
    assert not store.request_seen("1700000000", "n1", "digest-b", 660)
    assert store.request_seen("1700000000", "n2", "digest-b", 660)
    assert store.request_seen("1700000001", "n1", "digest-b", 660)
    assert store.claim("m:1")  # message keys are not confused with request pairs
