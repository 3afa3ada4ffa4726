"""Shared set-ups (fixtures, constants and helpers) first written for tests/flows/test_binding.py."""
from __future__ import annotations

import time


class Codes:
    """The SMS codes the bot sends, one by one (sent after each reply, once committed)."""

    def __init__(self, services) -> None:
        self.services, self.seen = services, 0

    def next(self) -> str:
        for _ in range(300):
            if len(self.services.sms.sent) > self.seen:
                break
            time.sleep(0.01)
        self.seen = len(self.services.sms.sent)
        text = self.services.sms.sent[-1][1]
        return "".join(ch for ch in text if ch.isdigit())[:6]


async def walk(wx, openid, name, id_number, phone):
    await wx.say(openid, "绑定")
    await wx.say(openid, "同意")  # the privacy notice comes first
    await wx.say(openid, name)
    await wx.say(openid, id_number)
    return await wx.say(openid, phone)
