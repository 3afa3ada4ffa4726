"""Helpers of the console tests: staff accounts with passwords, a signed-in HTTP client,
and the CSRF token read from a page as a browser would."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import httpx
from sqlmodel import Session

from bot.infra.passwords import hash_password
from models import Staff

PASSWORD = "correct horse 42"
SPEC_LOGIN, ADMIN_LOGIN = "wangzy", "zhaozg"


def add_staff(engine, openid: str, name: str, role: str, login: str,
              password: str = PASSWORD) -> None:
    with Session(engine) as s:
        member = s.get(Staff, openid) or Staff(openid=openid, name=name, role=role,
                                               created_at=datetime.now(timezone.utc))
        member.login, member.password_hash = login, hash_password(password)
        s.add(member)
        s.commit()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, login: str, password: str = PASSWORD
                  ) -> httpx.Response:
    form = await http.get("/admin/login")
    return await http.post("/admin/login", data={"login": login, "password": password,
                                                 "csrf": csrf_of(form.text), "next": ""})


async def post(http: httpx.AsyncClient, page: str, url: str, data: dict) -> httpx.Response:
    """Submit a form of `page` (its CSRF token read from it) to `url`."""
    html = (await http.get(page)).text
    return await http.post(url, data={**data, "csrf": csrf_of(html)})
