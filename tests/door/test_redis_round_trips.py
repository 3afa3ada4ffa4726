"""How many times one message goes to Redis, through /wechat (a regression guard: each round
trip is latency and the worker's CPU). On Redis a message costs two: its claim (with the
request's pair, the user's lock and record) before the handler, and after the commit one
script that writes the state, releases the lock and stores the reply for WeChat's retries."""
from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from tests.conftest import REDIS_URL
from bot.infra.texts import render
from bot.wechat.simulator import text_xml

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="Redis only (REDIS_URL)")
U = "oRedisRoundTrips00000001"


@contextmanager
def round_trips():
    """Every packet sent to Redis meanwhile (a pipeline or a script is one), synchronous
    client and asyncio, each as its first command's name."""
    import redis.asyncio.connection
    import redis.connection

    sent: list[str] = []
    saved = []
    for cls in (redis.connection.Connection, redis.asyncio.connection.Connection):
        orig = cls.send_packed_command
        saved.append((cls, orig))

        def counted(self, command, *a, _orig=orig, **kw):
            first = command[0] if isinstance(command, (list, tuple)) else command
            sent.append(bytes(first)[:40].decode(errors="replace"))
            return _orig(self, command, *a, **kw)

        cls.send_packed_command = counted
    try:
        yield sent
    finally:
        for cls, orig in saved:
            cls.send_packed_command = orig


async def test_a_message_goes_to_redis_twice_and_a_retry_still_gets_its_reply(wx_plain):
    """A message that starts a flow (state written) and one outside any flow (state
    untouched) cost two round trips each; the state, the lock's release and the stored reply
    travel in the second: the next message is answered at once (a lock left held would keep
    it waiting 10 s, then apologise), and WeChat's retry of the first message gets its reply
    byte for byte."""
    await wx_plain.say(U, "帮助")  # the user's row, the scripts loaded: not counted
    xml = text_xml(U, "绑定", msg_id=4242001)
    with round_trips() as sent:
        first = await wx_plain.post(xml, U)
    assert first.status_code == 200 and "身份" in wx_plain.side.read_reply(first.content)["Content"]
    assert len(sent) == 2, sent
    with round_trips() as sent:
        help_text = await wx_plain.say(U, "帮助")
    assert help_text and len(sent) == 2, sent
    retry = await wx_plain.post(xml, U)
    assert retry.content == first.content
    started = time.monotonic()
    after = await wx_plain.say(U, "退出")
    assert after and render("error") not in after and time.monotonic() - started < 5
