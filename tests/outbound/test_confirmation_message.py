"""The 预约成功 confirmation says until when the booking can be cancelled free (DOMAIN:
"the confirmation message says until when"), in the template message as in the SMS, in
Shanghai time, within WeChat's field rules (the double refuses a value that breaks them).

A booking confirmed by #确认 through /wechat, the outbox sending the template to the WeChat
double. Deadlines worked out by hand from DOMAIN: free until 12:00 on the last working day
before the service; a confirmation sent less than 24 hours before that deadline gives 24
hours from the confirmation instead (never after the service starts)."""
from __future__ import annotations

import asyncio
import json

import pytest
import time_machine

from tests.support.booking import book_dental, bookings
from tests.support.outbox import rows
from tests.support.staff import SPEC, U, desk  # noqa: F401 (fixture)

LATE = "2026-12-02 22:30:00+08:00"  # Wednesday evening; 14:30 UTC the same day
EARLY = "2026-12-03 07:30:00+08:00"  # Thursday morning; 23:30 UTC the day before


async def confirmed_template(wechat_api, timeout: float = 5.0) -> dict:
    for _ in range(int(timeout / 0.02)):
        for call in wechat_api.state.sent:
            body = call["body"]
            if (call["api"] == "template" and body.get("touser") == U
                    and body.get("template_id") == "demo-booking-confirmed"):
                return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"no confirmation reached the double: {wechat_api.state.sent}")


@pytest.mark.parametrize("clock,day,card,sms", [
    # For Fri 4 Dec, confirmed Wed 22:30: Thu 12:00 is < 24 h away, so 24 h from the
    # confirmation: Thu 3 Dec 22:30 (UTC: 14:30).
    (LATE, "2026-12-04", "2026年12月3日 22:30", "12月3日22:30前可免费取消"),
    # For Fri 4 Dec, confirmed Thu 07:30: until Fri 4 Dec 07:30 (UTC: 3 Dec 23:30).
    (EARLY, "2026-12-04", "2026年12月4日 07:30", "12月4日07:30前可免费取消"),
    # For Tue 8 Dec, confirmed Wed 22:30: 12:00 on Mon 7 Dec, the last working day before.
    (LATE, "2026-12-08", "2026年12月7日 12:00", "12月7日12:00前可免费取消"),
])
async def test_the_confirmation_card_says_until_when_it_cancels_free(
        wx_plain, desk, services, wechat_api, sent, clock, day, card, sms):
    with time_machine.travel(clock, tick=True):
        await book_dental(wx_plain, U, day="1")
        (b,) = bookings(services)
        await wx_plain.say(SPEC, f"#确认 {b.number} {day} 09:30")
        body = await confirmed_template(wechat_api)
    data = {k: v["value"] for k, v in body["data"].items()}
    assert data["time6"] == card, data  # WeChat's time format, Shanghai's wall clock
    assert data["thing5"] == "请带身份证"  # the note stays
    (text_row,) = [r for r in rows(services, channel="sms") if "confirmed" in r.dedupe_key]
    assert sms in json.loads(text_row.payload)["text"]  # the SMS says the same instant

