"""The console's booking page says the free-cancellation deadline at the rules' cut-off
(docs/programme.md: 12:00 on the last working day before the service date), as the chat
does; a cut-off changed in rules.toml moves it."""
from __future__ import annotations

import re

import pytest
import time_machine

from tests.support.console import SPEC_LOGIN, add_staff, sign_in
from tests.support.booking import WED
from tests.support.rules import change, changed, settings  # noqa: F401  (fixtures)
from tests.support.staff import SPEC, booked, desk  # noqa: F401  (fixture)

pytestmark = pytest.mark.settings(admin_enabled=True)
DEADLINE = re.compile(r"免费取消截止</dt><dd>(\d{4}-\d\d-\d\d) (\d\d:\d\d)</dd>")


async def deadline_shown(wx_plain, http, desk, services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
        await sign_in(http, SPEC_LOGIN)
        page = await http.get(f"/admin/bookings/{b.number}")
    found = DEADLINE.search(page.text)
    assert found, page.text
    return found.groups()


async def test_the_booking_page_says_noon(wx_plain, http, desk, services):
    _, at = await deadline_shown(wx_plain, http, desk, services)
    assert at == "12:00"


@change(('cancel_cutoff = "12:00"', 'cancel_cutoff = "15:00"'))
async def test_the_booking_page_follows_the_cut_off(wx_plain, http, desk, services):
    _, at = await deadline_shown(wx_plain, http, desk, services)
    assert at == "15:00"
