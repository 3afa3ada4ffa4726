"""Staff accounts of the web console: sign-in names, passwords, sessions and the sign-in
lock-out. One data layer for the console (bot/console) and the CLI (`staff passwd`, `staff
remove`); the account itself and its sign-in name are made by `accounts.save_staff`.

A session is a random token in a signed cookie; only an HMAC of the token is stored (a
`staff_session` row), so a copy of the database opens no session. A session ends on
sign-out, after `idle` without a request, `longest` after sign-in, and for every session of
a staff member whose password changes or who is removed.
"""
from __future__ import annotations

import logging
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from bot.domain.accounts import (Failure, LoginRefused, count_signin_failure, default_login,
                                 free_login, keyed_digest, signin_keys, signin_locked_until)
from bot.domain.staff_desk import audit, snapshot
from bot.infra.passwords import check_password, hash_password
from models import Staff, StaffSession, StaffSigninLink

log = logging.getLogger(__name__)

MIN_PASSWORD = 8


@dataclass(frozen=True)
class SignInRules:
    max_failures: int = 5
    window_minutes: int = 30
    lock_minutes: int = 30
    idle_minutes: int = 30
    longest_hours: int = 12

    @classmethod
    def of(cls, settings) -> "SignInRules":
        return cls(settings.admin_login_max_failures, settings.admin_login_window_minutes,
                   settings.admin_login_lock_minutes, settings.admin_session_idle_minutes,
                   settings.admin_session_max_hours)


# --- Login names and passwords ------------------------------------------------------------


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD or len(password) > 200:
        raise LoginRefused("short_password")
    return password


def end_sessions(session: Session, openid: str, now: datetime) -> int:
    """End every open session of this staff member (password changed, account removed)."""
    res = session.execute(update(StaffSession).where(StaffSession.staff_openid == openid,
                                                     StaffSession.ended_at.is_(None))
                          .values(ended_at=now))
    return res.rowcount or 0


def set_password(session: Session, who: str, member: Staff, password: str | None,
                 now: datetime) -> None:
    """Set (or, with None, remove) a console password; every session of theirs ends."""
    if password is not None:
        check_new_password(password)
    member.password_hash = hash_password(password) if password is not None else None
    if member.login is None:
        member.login = free_login(session, default_login(member.name) or "staff", member.openid)
    session.add(member)
    session.flush()
    ended = end_sessions(session, member.openid, now)
    audit(session, who, "staff_passwd", member.openid, now,
          after={"password": password is not None, "sessions_ended": ended})


def temporary_password() -> str:
    """A password an admin reads to a colleague once (a reset): 12 easy characters."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


def remove_staff(session: Session, who: str, member: Staff, now: datetime) -> None:
    """A staff account removed (deactivated): its sessions end, chat commands stop."""
    end_sessions(session, member.openid, now)
    before = snapshot(member)
    before["password_hash"] = bool(before.get("password_hash"))
    audit(session, who, "staff_remove", member.openid, now, before=before)
    session.delete(member)
    session.flush()


# --- Signing in -----------------------------------------------------------------------------


@dataclass
class SignIn:
    """The outcome of a sign-in: the member and the new session's cookie token, or why not
    (`wrong` covers a locked login too: the same answer as a wrong password)."""

    member: Staff | None = None
    token: str | None = None
    failure: Failure | None = None


def session_id(secret: str, token: str) -> str:
    return keyed_digest(secret, "staff-session", token)


def sign_in(session: Session, secret: str, login: str, password: str, address: str,
            now: datetime, rules: SignInRules) -> SignIn:
    """Check the login and password; each failure is counted per login and per address
    (in SQL) and logged without the password; while either is locked, even the right
    password is refused, with the same answer."""
    name = unicodedata.normalize("NFKC", (login or "").strip()).lower()[:64]
    keys = signin_keys(secret, name, address)
    conn = session.connection()
    locked = signin_locked_until(conn, keys, now)
    member = session.exec(select(Staff).where(Staff.login == name)).first() if name else None
    # The hash is always computed, so a missing login takes as long as a wrong password.
    good = check_password(password or "", member.password_hash if member else None)
    if member is None:
        check_password(password or "", _DUMMY)
    if locked is None and good:
        return _open(session, secret, member, now, address=address)
    failure = Failure(0, locked) if locked is not None else count_signin_failure(
        conn, keys, now, rules.max_failures, rules.window_minutes, rules.lock_minutes)
    log.warning("console sign-in refused for login %r from %s (%s)", name[:20], address,
                "locked" if locked is not None else
                (f"locked until {failure.locked_until:%H:%M}" if failure.locked_until
                 else f"{failure.left} tries left"))
    audit(session, "console", "sign_in_failed", f"login:{name[:40]}", now,
          after={"address": address, "locked": failure.locked_until is not None})
    return SignIn(failure=failure)


_DUMMY = hash_password(secrets.token_hex(8))


def _open(session: Session, secret: str, member: Staff, now: datetime, **facts) -> SignIn:
    token = secrets.token_urlsafe(32)
    session.add(StaffSession(id=session_id(secret, token), staff_openid=member.openid,
                             created_at=now, seen_at=now))
    audit(session, member.openid, "sign_in", f"staff:{member.openid}", now, after=facts)
    return SignIn(member, token)


# --- One-time sign-in links (#登录) --------------------------------------------------------

LINK_MINUTES = 5


def create_link(session: Session, secret: str, openid: str, now: datetime) -> str:
    """A one-time sign-in token for this staff member, valid LINK_MINUTES; only its HMAC is
    stored."""
    token = secrets.token_urlsafe(24)
    session.add(StaffSigninLink(token_hash=keyed_digest(secret, "signin-link", token),
                                staff_openid=openid, created_at=now,
                                expires_at=now + timedelta(minutes=LINK_MINUTES)))
    audit(session, openid, "signin_link", f"staff:{openid}", now)
    return token


def redeem_link(session: Session, secret: str, token: str, now: datetime,
                address: str) -> SignIn:
    """Sign in with a link's token: once, within its minutes, for a staff member who still
    exists. Anything else is refused (logged, never the token)."""
    row = None
    if token and len(token) <= 64:
        row = session.exec(select(StaffSigninLink).where(
            StaffSigninLink.token_hash == keyed_digest(secret, "signin-link", token))
            .with_for_update()).first()
    member = session.get(Staff, row.staff_openid) if row is not None else None
    if row is None or row.used_at is not None or row.expires_at <= now or member is None:
        log.warning("console sign-in link refused from %s (%s)", address,
                    "unknown" if row is None else "used" if row.used_at else
                    "expired" if row.expires_at <= now else "no such staff")
        return SignIn()
    row.used_at = now
    session.add(row)
    return _open(session, secret, member, now, address=address, by="link")


def current(session: Session, secret: str, token: str, now: datetime,
            rules: SignInRules) -> tuple[Staff, StaffSession] | None:
    """The staff member of a live session (its idle clock restarted), or None."""
    row = session.get(StaffSession, session_id(secret, token))
    if row is None or row.ended_at is not None:
        return None
    if now - row.seen_at > timedelta(minutes=rules.idle_minutes) or \
            now - row.created_at > timedelta(hours=rules.longest_hours):
        row.ended_at = now
        session.add(row)
        return None
    member = session.get(Staff, row.staff_openid)
    if member is None:
        return None
    row.seen_at = now
    session.add(row)
    return member, row


def sign_out(session: Session, secret: str, token: str, now: datetime) -> None:
    row = session.get(StaffSession, session_id(secret, token))
    if row is not None and row.ended_at is None:
        row.ended_at = now
        session.add(row)
        audit(session, row.staff_openid, "sign_out", f"staff:{row.staff_openid}", now)
