"""Customers and their WeChat accounts: the one place that finds a policyholder by ID
number, binds and unbinds an openid, and says who holds a customer; staff accounts (the one
place one is created, with its console sign-in name); and the binding limits: failures per
WeChat account and per customer, codes per phone. Used by the chat handlers, the CLI, the
console and the demo alike."""
from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, case, delete, insert, update
from sqlmodel import Session, select

from bot.domain.vocab import STAFF_ROLES
from bot.infra.db import upsert
from models import BindLimit, Customer, Staff, WechatUser


_USER = WechatUser.__table__
_CUSTOMER = Customer.__table__


class BoundElsewhere(Exception):
    """The customer is already bound to another WeChat account."""


def customer_by_id_number(session: Session, id_number: str) -> Customer | None:
    return session.exec(select(Customer).where(Customer.id_number == id_number)).first()


def holder_of(session: Session, customer_id: int) -> WechatUser | None:
    """The WeChat account bound to this customer, if any."""
    return session.exec(select(WechatUser).where(WechatUser.customer_id == customer_id)).first()


def bound_elsewhere(session: Session, customer: Customer, openid: str) -> bool:
    holder = holder_of(session, customer.id)
    return holder is not None and holder.openid != openid


# Why an openid may not be bound to a customer (`binding_refusal`).
UNKNOWN_CUSTOMER = "unknown_customer"  # no customer has the ID number
BOUND_ELSEWHERE = "bound_elsewhere"  # the customer is bound to another openid
OPENID_TAKEN = "openid_taken"  # the openid is bound to another customer


def binding_refusal(openid: str, customer_id: int | None, holder: str | None,
                    openid_customer: int | None, *, move_openid: bool = False) -> str | None:
    """The one rule of binding `openid` to the customer `customer_id` (None: no customer has
    the ID number), given `holder`, the openid the customer is bound to now, and
    `openid_customer`, the customer `openid` is bound to now. One customer, one WeChat
    account: a customer bound to another openid is refused; so is an openid bound to
    another customer, unless `move_openid` (the single staff `bind`, which has always moved
    an openid from its old customer)."""
    if customer_id is None:
        return UNKNOWN_CUSTOMER
    if holder is not None and holder != openid:
        return BOUND_ELSEWHERE
    if not move_openid and openid_customer is not None and openid_customer != customer_id:
        return OPENID_TAKEN
    return None


def bind(session: Session, openid: str, customer: Customer, now: datetime) -> WechatUser:
    """Attach `openid` to `customer` (one customer, one WeChat account)."""
    holder = holder_of(session, customer.id)
    if binding_refusal(openid, customer.id, holder.openid if holder else None, None,
                       move_openid=True) == BOUND_ELSEWHERE:
        raise BoundElsewhere(customer.id)
    user = session.get(WechatUser, openid) or WechatUser(openid=openid, following=True)
    user.customer_id, user.bound_at = customer.id, now
    user.bind_failures, user.bind_locked_until = 0, None
    session.add(user)
    return user


# Outcomes of `bind_many` besides the refusals.
BOUND_NEW = "new"  # a WeChat account the bot had never seen, now bound
BOUND = "bound"  # a known WeChat account, now bound
UNCHANGED = "unchanged"  # already bound to that customer


def bind_many(conn: Connection, pairs: list[tuple[str, str]], now: datetime, *,
              write: bool = True, changes: list | None = None) -> list[str]:
    """Bind each (openid, ID number) of `pairs`, set-based in the caller's transaction (the
    bulk `bind --file`): one SELECT per table for the batch, then executemany INSERT and
    UPDATE. Returns one outcome per pair: BOUND_NEW, BOUND, UNCHANGED or the refusal of
    `binding_refusal` (nothing is written for a refused pair). With `write` off, only
    checks. The pairs' openids and ID numbers are each unique (the caller checks). When
    `changes` is a list, each binding written adds (openid, old customer id, new one)."""
    if not pairs:
        return []
    numbers = sorted({n for _, n in pairs})
    customers = dict(conn.execute(select(_CUSTOMER.c.id_number, _CUSTOMER.c.id)
                                  .where(_CUSTOMER.c.id_number.in_(numbers))).all())
    ids = sorted(set(customers.values()))
    holders = dict(conn.execute(select(_USER.c.customer_id, _USER.c.openid)
                                .where(_USER.c.customer_id.in_(ids))).all()) if ids else {}
    users = dict(conn.execute(select(_USER.c.openid, _USER.c.customer_id)
                              .where(_USER.c.openid.in_(sorted({o for o, _ in pairs})))).all())
    outcomes, new, known = [], [], []
    for openid, number in pairs:
        customer_id = customers.get(number)
        why = binding_refusal(openid, customer_id, holders.get(customer_id), users.get(openid))
        if why is None:
            if openid not in users:
                why = BOUND_NEW
                new.append({"openid": openid, "following": True, "customer_id": customer_id,
                            "bound_at": now, "bind_failures": 0})
            elif users[openid] == customer_id:
                why = UNCHANGED
            else:
                why = BOUND
                known.append({"who": openid, "cid": customer_id, "now": now})
        outcomes.append(why)
        if write and changes is not None and why in (BOUND_NEW, BOUND):
            changes.append((openid, users.get(openid), customer_id))
    if write and new:
        conn.execute(insert(_USER), new)
    if write and known:
        conn.execute(update(_USER).where(_USER.c.openid == bindparam("who"))
                     .values(customer_id=bindparam("cid"), bound_at=bindparam("now"),
                             bind_failures=0, bind_locked_until=None), known)
    return outcomes


def unbind(session: Session, openid: str) -> bool:
    """Detach `openid` from its customer; False when it was not bound."""
    user = session.get(WechatUser, openid)
    if user is None or user.customer_id is None:
        return False
    user.customer_id, user.bound_at = None, None
    session.add(user)
    return True


# --- Staff accounts ------------------------------------------------------------------------

LOGIN_RE = re.compile(r"[\w.\-]{2,64}")  # letters (Chinese too), digits, _ . -


class LoginRefused(Exception):
    """A login name or password that cannot be used; `code` names why (`holder`: who has a
    taken login)."""

    def __init__(self, code: str, holder: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.holder = holder


def default_login(name: str) -> str:
    """The sign-in name made from a staff member's name: NFKC, lower case, spaces and
    punctuation dropped (王 专员 -> 王专员; Li Lei -> lilei)."""
    text = unicodedata.normalize("NFKC", name).lower()
    return "".join(ch for ch in text if ch.isalnum() or ch in "._-")[:64]


def check_login(login: str) -> str:
    login = unicodedata.normalize("NFKC", login.strip()).lower()
    if not LOGIN_RE.fullmatch(login):
        raise LoginRefused("bad_login")
    return login


def free_login(session: Session, wanted: str, openid: str | None = None) -> str:
    """`wanted`, or `wanted2`, `wanted3`… when another staff member has it."""
    base = check_login(wanted)
    n = 1
    while True:
        candidate = base if n == 1 else f"{base[:60]}{n}"
        holder = session.exec(select(Staff).where(Staff.login == candidate)).first()
        if holder is None or holder.openid == openid:
            return candidate
        n += 1


def save_staff(session: Session, openid: str, name: str, role: str, now: datetime, *,
               login: str | None = None) -> Staff:
    """Create (or update) the staff account of `openid`: the one path for `staff add`, an
    invitation redeemed with `#注册` and the demo's accounts. Its console sign-in name is
    `login` (refused as `bad_login`, or as `login_taken` when another member holds it) or,
    for an account without one, made from the name (王专员, then 王专员2 …)."""
    name = name.strip()
    if role not in STAFF_ROLES:
        raise ValueError("role must be specialist or admin")
    if not name or len(name) > 64 or not openid.strip() or len(openid) > 64:
        raise ValueError("openid and name must be 1-64 characters")
    wanted = check_login(login) if login else None
    if wanted:
        holder = session.exec(select(Staff).where(Staff.login == wanted)).first()
        if holder is not None and holder.openid != openid:
            raise LoginRefused("login_taken", holder=holder.openid)
    member = session.get(Staff, openid) or Staff(openid=openid, name=name, role=role,
                                                 created_at=now)
    member.name, member.role = name, role
    if wanted or member.login is None:
        member.login = wanted or free_login(session, default_login(name) or "staff", openid)
    session.add(member)
    session.flush()
    return member


# --- Binding limits -----------------------------------------------------------------------
#
# Every counter is incremented in SQL, in the message's own transaction (an UPSERT that
# adds one to the stored value), so a count is never lost to an ORM object read earlier,
# to a row that does not exist yet, or to another worker counting at the same moment.


@dataclass(frozen=True)
class BindRules:
    """The binding rules' numbers: the code's life from settings, the limits from rules.toml
    ([binding], which a setting may override)."""

    code_ttl_seconds: int
    resend_after_seconds: int
    max_failures: int  # per WeChat account
    lock_minutes: int
    customer_max_failures: int  # per customer, across WeChat accounts
    customer_window_minutes: int
    sms_per_hour: int  # codes per phone
    sms_per_day: int

    @classmethod
    def of(cls, settings, rules) -> "BindRules":
        b = rules.binding
        return cls(settings.bind_code_ttl_seconds, settings.bind_resend_after_seconds,
                   b.max_failures, b.lock_minutes, b.customer_max_failures,
                   b.customer_window_minutes, b.sms_codes_per_phone_per_hour,
                   b.sms_codes_per_phone_per_day)


@dataclass(frozen=True)
class Failure:
    """The outcome of one counted failure: tries left, or the lock it caused."""

    left: int
    locked_until: datetime | None = None


_LIMIT = BindLimit.__table__


def keyed_digest(secret: str, purpose: str, value: str) -> str:
    """An HMAC-SHA256 of `value` under the server secret: stored instead of the value."""
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def openid_locked_until(conn: Connection, openid: str, now: datetime) -> datetime | None:
    until = conn.execute(select(_USER.c.bind_locked_until)
                         .where(_USER.c.openid == openid)).scalar()
    return until if until is not None and until > now else None


def count_openid_failure(conn: Connection, openid: str, now: datetime, rules: BindRules) -> Failure:
    """One failure of this WeChat account; the last allowed one locks its binding."""
    stmt = upsert(conn, _USER).values(openid=openid, following=True, bind_failures=1)
    stmt = stmt.on_conflict_do_update(index_elements=[_USER.c.openid],
                                      set_={"bind_failures": _USER.c.bind_failures + 1})
    failures = conn.execute(stmt.returning(_USER.c.bind_failures)).scalar_one()
    if failures < rules.max_failures:
        return Failure(rules.max_failures - failures)
    until = now + timedelta(minutes=rules.lock_minutes)
    conn.execute(update(_USER).where(_USER.c.openid == openid)
                 .values(bind_failures=0, bind_locked_until=until))
    return Failure(0, until)


def _count(conn: Connection, key: str, now: float, window: float) -> tuple[int, float]:
    """Add one to the counter `key` whose window (from its first event) lasts `window`
    seconds; a counter whose window has passed starts again at one. Returns (count,
    window start)."""
    expired = _LIMIT.c.window_start <= now - window
    stmt = upsert(conn, _LIMIT).values(key=key, window_start=now, count=1)
    stmt = stmt.on_conflict_do_update(index_elements=[_LIMIT.c.key], set_={
        "count": case((expired, 1), else_=_LIMIT.c.count + 1),
        "window_start": case((expired, now), else_=_LIMIT.c.window_start)})
    row = conn.execute(stmt.returning(_LIMIT.c.count, _LIMIT.c.window_start)).one()
    return row[0], row[1]


def customer_locked_until(conn: Connection, customer_id: int, now: datetime) -> datetime | None:
    """When the binding of this customer (from any WeChat account) unlocks, if locked."""
    return _locked_until(conn, f"cf:{customer_id}", now)


def count_customer_failure(conn: Connection, customer_id: int, now: datetime,
                           rules: BindRules) -> Failure:
    """One failure against this customer (a wrong code, or trying to bind a customer bound
    to another WeChat account), whichever account it came from. The last one allowed within
    the window locks the customer's binding."""
    return _failure_in_window(conn, f"cf:{customer_id}", now, rules.customer_max_failures,
                              rules.customer_window_minutes, rules.lock_minutes)


def _failure_in_window(conn: Connection, key: str, now: datetime, limit: int, window_minutes: int,
                       lock_minutes: int) -> Failure:
    count, _ = _count(conn, key, now.timestamp(), window_minutes * 60)
    if count < limit:
        return Failure(limit - count)
    until = now + timedelta(minutes=lock_minutes)
    conn.execute(update(_LIMIT).where(_LIMIT.c.key == key)
                 .values(count=0, window_start=now.timestamp(), locked_until=until.timestamp()))
    return Failure(0, until)


def _locked_until(conn: Connection, key: str, now: datetime) -> datetime | None:
    until = conn.execute(select(_LIMIT.c.locked_until).where(_LIMIT.c.key == key)).scalar()
    if until is None or until <= now.timestamp():
        return None
    return datetime.fromtimestamp(until, now.tzinfo)


# Staff registration (#注册 <code>) guesses: counted per WeChat account like binding's
# failures (the same numbers: BIND_MAX_FAILURES within BIND_CUSTOMER_WINDOW_MINUTES lock the
# account's registration for BIND_LOCK_MINUTES).


def register_locked_until(conn: Connection, openid: str, now: datetime) -> datetime | None:
    return _locked_until(conn, f"rf:{openid}", now)


def count_register_failure(conn: Connection, openid: str, now: datetime,
                           rules: BindRules) -> Failure:
    """One wrong or expired invitation code from this WeChat account; the last one allowed
    within the window locks its registration."""
    return _failure_in_window(conn, f"rf:{openid}", now, rules.max_failures,
                              rules.customer_window_minutes, rules.lock_minutes)


def claim_code_sms(conn: Connection, secret: str, phone: str, now: datetime,
                   rules: BindRules) -> float:
    """Count one binding code to `phone` against its hourly and daily limits. Returns 0 when
    it may be sent, else the seconds until it may (the attempt is counted either way)."""
    digest = keyed_digest(secret, "phone", phone)
    t = now.timestamp()
    for prefix, window, limit in (("sh", 3600, rules.sms_per_hour),
                                  ("sd", 86400, rules.sms_per_day)):
        count, start = _count(conn, f"{prefix}:{digest}", t, window)
        if count > limit:
            return max(1.0, start + window - t)
    return 0.0


def purge_limits(conn: Connection, now: float, longest_window: float) -> int:
    """Forget counters whose window and lock have both passed."""
    res = conn.execute(delete(_LIMIT).where(
        _LIMIT.c.window_start < now - longest_window,
        (_LIMIT.c.locked_until.is_(None)) | (_LIMIT.c.locked_until < now)))
    return res.rowcount




# Console sign-in failures (/admin): counted per login name and per client address (an
# HMAC of each, never the name or address itself), in the same style as binding's (the
# numbers come from ADMIN_LOGIN_MAX_FAILURES, ADMIN_LOGIN_WINDOW_MINUTES and
# ADMIN_LOGIN_LOCK_MINUTES).


def signin_keys(secret: str, login: str, address: str) -> tuple[str, str]:
    return (f"sl:{keyed_digest(secret, 'signin-login', login.strip().lower())[:40]}",
            f"sa:{keyed_digest(secret, 'signin-address', address)[:40]}")


def signin_locked_until(conn: Connection, keys: tuple[str, ...], now: datetime) -> datetime | None:
    """When sign-in unlocks for the first locked of `keys` (login, address), if locked."""
    found = [u for u in (_locked_until(conn, k, now) for k in keys) if u is not None]
    return max(found) if found else None


def count_signin_failure(conn: Connection, keys: tuple[str, ...], now: datetime, limit: int,
                         window_minutes: int, lock_minutes: int) -> Failure:
    """One failed sign-in, counted against the login and the address; the last one allowed
    on either locks it."""
    failures = [_failure_in_window(conn, k, now, limit, window_minutes, lock_minutes)
                for k in keys]
    locked = [f.locked_until for f in failures if f.locked_until is not None]
    return Failure(min(f.left for f in failures), max(locked) if locked else None)
