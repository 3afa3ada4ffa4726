"""The staff console's sign-in (issue 16): password sign-in, the session cookie, sign-out,
the lock-out per login and per address, CSRF, and the security headers."""
from __future__ import annotations

import pytest

from tests.console import ADMIN_LOGIN, PASSWORD, SPEC_LOGIN, add_staff, csrf_of, sign_in
from tests.test_staff import ADMIN, SPEC

pytestmark = pytest.mark.settings(admin_enabled=True)


@pytest.fixture
def staff(services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)


async def test_sign_in_then_the_queue_then_sign_out(http, staff):
    first = await http.get("/admin/bookings", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/admin/login")
    res = await sign_in(http, SPEC_LOGIN)
    assert res.status_code == 303 and res.headers["location"] == "/admin/bookings"
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    page = await http.get("/admin/bookings")
    assert page.status_code == 200 and "王专员" in page.text
    out = await http.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    again = await http.get("/admin/bookings", follow_redirects=False)
    assert again.status_code == 303
