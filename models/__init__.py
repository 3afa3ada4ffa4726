"""Tables. One module, one obvious place; migrations live in models/migrations."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Float, Index, Text, UniqueConstraint, false
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime as UtcDateTime

# Every instant (a `datetime` field) is stored through one column type, UtcDateTime, which
# SQLModel gives each `datetime` field: `timestamptz` on PostgreSQL (migrations 0001-0007),
# text on SQLite; it refuses a naive value and reads back an aware UTC datetime on both. A
# person reads it in TIMEZONE through one conversion (bot.infra.texts.local).
_FEN = Decimal("0.01")


class Money(TypeDecorator):
    """CNY stored as a whole number of fen (BIGINT): exact on every database, SQLite
    included (whose NUMERIC would be a binary float); a Decimal in Python."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        amount = Decimal(value)
        if amount != amount.quantize(_FEN):
            raise ValueError(f"{value} has fractions of a fen")
        return int(amount.scaleb(2))

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(int(value)).scaleb(-2).quantize(_FEN)


# --- The WeChat side ---------------------------------------------------------------


class WechatUser(SQLModel, table=True):
    """Someone who follows (or followed) the service account; bound to a customer or not."""

    __tablename__ = "wechat_user"
    openid: str = Field(primary_key=True, max_length=64)
    following: bool = True
    subscribed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    subscribe_scene: str | None = Field(default=None, max_length=64)
    last_seen_at: datetime | None = None
    customer_id: int | None = Field(default=None, foreign_key="customer.id", unique=True)
    bound_at: datetime | None = None
    bind_failures: int = 0
    bind_locked_until: datetime | None = None
    # WeChat's customer-service window: the customer-service messages reserved since the
    # user's last message (`cs_window_from`, its epoch seconds), counted atomically across
    # workers (bot.infra.outbox).
    cs_window_from: float | None = Field(default=None, sa_type=Float)
    cs_used: int = 0


class Staff(SQLModel, table=True):
    __tablename__ = "staff"
    openid: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)  # specialist | admin
    password_hash: str | None = None
    created_at: datetime
    # The web console's sign-in name (unique; `staff add --login`, default from the name).
    login: str | None = Field(default=None, max_length=64, unique=True)


class StaffSession(SQLModel, table=True):
    """A signed-in console session: only an HMAC of the cookie's token is kept. Ended on
    sign-out, on a password change and when the staff member is removed; idle and maximum
    lifetimes are checked against `seen_at` and `created_at` (bot.domain.staff_login)."""

    __tablename__ = "staff_session"
    id: str = Field(primary_key=True, max_length=64)  # HMAC of the cookie's token
    staff_openid: str = Field(max_length=64, index=True)
    created_at: datetime
    seen_at: datetime
    ended_at: datetime | None = None


class StaffSigninLink(SQLModel, table=True):
    """A one-time console sign-in link sent to a staff member's own WeChat (#登录): valid
    5 minutes, one use; only an HMAC of its token is kept."""

    __tablename__ = "staff_signin_link"
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    staff_openid: str = Field(max_length=64)
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class FsmState(SQLModel, table=True):
    """Conversation state of one user (the SQL flavour of the pluggable state store)."""

    __tablename__ = "fsm_state"
    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(default="{}", sa_type=Text)  # JSON: state, data, pages
    updated_at: float = Field(default=0.0, index=True)  # expired rows are purged daily


class DedupEntry(SQLModel, table=True):
    """One inbound WeChat message (by MsgId or event identity) and the reply it got."""

    __tablename__ = "dedup_entry"
    key: str = Field(primary_key=True, max_length=160)
    reply: str | None = Field(default=None, sa_type=Text)
    created_at: float = Field(index=True)


class BindLimit(SQLModel, table=True):
    """A rate-limit counter of identity binding, keyed by what it limits: failures against
    one customer (`cf:<customer id>`), binding codes sent to one phone per hour and per day
    (`sh:`/`sd:` + an HMAC of the number, never the number). `count` events since
    `window_start` (epoch seconds); `locked_until` when the limit locked binding."""

    __tablename__ = "bind_limit"
    key: str = Field(primary_key=True, max_length=80)
    window_start: float
    count: int = 0
    locked_until: float | None = None


# --- Customers and policies ------------------------------------------------------------


class Customer(SQLModel, table=True):
    """A policyholder (投保人)."""

    __tablename__ = "customer"
    id: int | None = Field(default=None, primary_key=True)
    id_number: str = Field(max_length=18, unique=True)
    name: str = Field(max_length=64)
    phone: str = Field(max_length=20)
    sex: str = Field(max_length=1)  # M | F, from the ID number
    birth_date: date
    tier: str = Field(default="mass", max_length=16, index=True)
    tier_since: date | None = None
    contribution: Decimal = Field(default=Decimal("0"), sa_type=Money)
    evaluated_on: date | None = None
    # Set in the transaction that changes the customer's policies (an import), cleared by
    # the tier run that evaluates them: a crash between the two cannot leave tiers stale.
    needs_recompute: bool = Field(default=False, index=True,
                                  sa_column_kwargs={"server_default": false()})


class Policy(SQLModel, table=True):
    __tablename__ = "policy"
    id: int | None = Field(default=None, primary_key=True)
    policy_no: str = Field(max_length=32, unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    product_name: str = Field(max_length=128)
    liabilities: str = Field(default="", max_length=128)  # ;-separated
    payment_mode: str = Field(max_length=8)  # regular | single
    annualized_basic_premium: Decimal = Field(default=Decimal("0"), sa_type=Money)
    single_premium: Decimal = Field(default=Decimal("0"), sa_type=Money)
    annual_regular_topup: Decimal = Field(default=Decimal("0"), sa_type=Money)
    initial_lump_sum_topup: Decimal = Field(default=Decimal("0"), sa_type=Money)
    irregular_topup: Decimal = Field(default=Decimal("0"), sa_type=Money)
    effective_date: date
    payment_years: int
    status: str = Field(max_length=16)
    cooling_off_end_date: date
    pledged: bool = False
    policy_loan: bool = False
    # The first and last day the policy can count (`bot.domain.tiers.window`), written with the
    # policy: the daily tier job looks up the customers whose contribution changes on a day by
    # these dates. NULL until computed (rows written before migration 0015, or by hand); the
    # daily job fills them and evaluates those customers.
    counts_from: date | None = Field(default=None, index=True)
    counts_until: date | None = Field(default=None, index=True)


class TierRun(SQLModel, table=True):
    """The daily tier job's progress: every customer's tier is up to date as of `evaluated_on`
    (events up to that day applied), under the rules whose digests are stored here."""

    __tablename__ = "tier_run"
    name: str = Field(primary_key=True, max_length=16)  # "daily"
    evaluated_on: date
    rules_digest: str = Field(max_length=64)
    window_digest: str = Field(max_length=64)
    finished_at: datetime


class FamilyMember(SQLModel, table=True):
    __tablename__ = "family_member"
    __table_args__ = (UniqueConstraint("customer_id", "id_number", name="uq_family_member"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    relation: str = Field(max_length=8)  # spouse | parent | child
    name: str = Field(max_length=64)
    id_number: str = Field(max_length=18)
    phone: str = Field(default="", max_length=20)
    # Registered by the policyholder in chat (not imported): erased on unbind unless a
    # booking refers to it.
    added_in_chat: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class TierHistory(SQLModel, table=True):
    __tablename__ = "tier_history"
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    from_tier: str = Field(max_length=16)
    to_tier: str = Field(max_length=16)
    reason: str = Field(max_length=32)  # upgrade | review_downgrade | no_policy_drop | initial
    contribution: Decimal = Field(sa_type=Money)
    effective_date: date
    changed_at: datetime


class Notification(SQLModel, table=True):
    """The outbox: every message to a customer (template, customer-service text, late reply,
    SMS, mass send, tier change), written in the transaction that causes it and sent exactly
    once by the dispatcher (bot.infra.outbox). `dedupe_key` is the idempotency key.

    status: pending → sending (claimed, lease until `lease_until`) → sent | dead (gave up,
    `last_error` says why) | dropped (not to be sent: unsubscribed, booking cancelled…) |
    expired (past `expires_at`). Times used for scheduling are epoch seconds."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_status", "status", "id"),
                      Index("ix_notification_due", "status", "next_attempt_at"),
                      Index("ix_notification_recipient", "recipient", "status"))
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    booking_id: int | None = Field(default=None, index=True)
    kind: str = Field(max_length=32)  # template | custom | late_reply | sms | mass_send | tier_changed…
    channel: str = Field(default="wechat", max_length=16)  # wechat | sms
    recipient: str = Field(default="", max_length=64)  # openid, phone or tag:<id>
    payload: str = Field(default="{}", sa_type=Text)
    dedupe_key: str = Field(max_length=160, unique=True)
    status: str = Field(default="pending", max_length=16)
    tries: int = 0
    next_attempt_at: float = Field(default=0.0, sa_type=Float)
    lease_until: float | None = Field(default=None, sa_type=Float)
    expires_at: float | None = Field(default=None, sa_type=Float)
    last_error: str | None = Field(default=None, max_length=256)
    client_msg_id: str | None = Field(default=None, max_length=64)
    msgid: int | None = Field(default=None, sa_type=BigInteger, index=True)
    delivery: str | None = Field(default=None, max_length=64)  # TEMPLATESENDJOBFINISH status
    created_at: datetime
    sent_at: datetime | None = None


Outbox = Notification


class UnansweredQuestion(SQLModel, table=True):
    """A message the FAQ could not answer (it got the fallback), kept for staff to grow the
    FAQ: the text, when, and the tier of the customer who asked; never who asked (no openid,
    no customer id)."""

    __tablename__ = "unanswered_question"
    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(sa_type=Text)
    tier: str | None = Field(default=None, max_length=32)
    asked_at: datetime = Field(index=True)


class LeftMessage(SQLModel, table=True):
    """A message a customer left for a human agent (人工 outside service hours)."""

    __tablename__ = "left_message"
    __table_args__ = (Index("ix_left_message_open", "closed_at", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    openid: str = Field(max_length=64, index=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id")
    text: str = Field(sa_type=Text)
    created_at: datetime
    closed_at: datetime | None = None
    closed_by: str | None = Field(default=None, max_length=64)
    reply: str | None = Field(default=None, sa_type=Text)


# --- Infrastructure ---------------------------------------------------------------------


class WechatToken(SQLModel, table=True):
    """WeChat's access token of one app id, shared by every worker when there is no Redis
    (bot.infra.tokens), with the bookkeeping of WeChat's rationed forced refreshes."""

    __tablename__ = "wechat_token"
    appid: str = Field(primary_key=True, max_length=64)
    access_token: str | None = Field(default=None, max_length=512)
    expires_at: float = Field(default=0.0, sa_type=Float)
    forced_at: float = Field(default=0.0, sa_type=Float)
    forced_day: str = Field(default="", max_length=10)
    forced_count: int = 0
    lock_until: float = Field(default=0.0, sa_type=Float)  # a worker's refresh lease
    lock_owner: str = Field(default="", max_length=32)


# --- Bookings -------------------------------------------------------------------------


class Institution(SQLModel, table=True):
    """A medical institution where services are given (imported from CSV)."""

    __tablename__ = "institution"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=128)
    city: str = Field(max_length=32, index=True)
    address: str = Field(max_length=256)
    kind: str = Field(max_length=24)  # commercial | tertiary_hospital
    services: str = Field(max_length=256)  # ;-separated service codes
    phone: str = Field(default="", max_length=32)
    closed_weekdays: str = Field(default="", max_length=32)  # ;-separated mon…sun
    closed_dates: str = Field(default="", sa_type=Text)  # ;-separated YYYY-MM-DD


class Booking(SQLModel, table=True):
    """One appointment request and its life: submitted (受理) → confirmed (预约成功) →
    completed | no_show | cancelled | cancelled_late."""

    __tablename__ = "booking"
    __table_args__ = (Index("ix_booking_quota", "customer_id", "service", "quota_year"),
                      Index("ix_booking_status_date", "status", "preferred_date"))
    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=16, unique=True)  # YY + yymmdd + 4-digit daily sequence
    request_key: str = Field(max_length=64, unique=True)  # one booking per confirmed request
    customer_id: int = Field(foreign_key="customer.id")  # the policyholder
    family_member_id: int | None = Field(default=None, foreign_key="family_member.id")
    tier: str = Field(max_length=16)  # the tier held when submitted
    service: str = Field(max_length=32)
    package: str | None = Field(default=None, max_length=32)
    institution_id: int | None = Field(default=None, foreign_key="institution.id")
    department: str | None = Field(default=None, max_length=64)
    hospital_preference: str | None = Field(default=None, max_length=128)
    expert: str | None = Field(default=None, max_length=64)
    exam: str | None = Field(default=None, max_length=32)
    visit_note: str | None = Field(default=None, max_length=200)  # symptoms or referral (特种检查)
    preferred_date: date
    confirmed_date: date | None = None
    confirmed_time: str | None = Field(default=None, max_length=5)  # HH:MM
    quota_year: int  # the calendar year of the service date: the year the use counts in
    status: str = Field(default="submitted", max_length=16)
    counted: bool = True  # whether this booking uses the year's quota
    consent_at: datetime | None = None  # the policyholder's consent for a family member
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None = None
    cancelled_at: datetime | None = None
    reminded_at: datetime | None = None
    attendance_confirmed_at: datetime | None = None
    # Optimistic version: every staff action (and a customer's cancellation) adds one, in an
    # UPDATE whose WHERE names the version the actor saw (`booking_store.bump`).
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    cancel_reason: str | None = Field(default=None, max_length=200)  # a staff cancellation's


class QuotaUse(SQLModel, table=True):
    """The lock of one yearly quota: the row is locked while a booking that uses or gives
    back one of its uses is checked and written. The uses themselves are counted from the
    bookings (`booking.counted`, `booking.quota_year`), the one record of them."""

    __tablename__ = "quota_use"
    customer_id: int = Field(foreign_key="customer.id", primary_key=True)
    service: str = Field(max_length=32, primary_key=True)
    year: int = Field(primary_key=True)


class BookingDaySeq(SQLModel, table=True):
    """The last booking number handed out on one day."""

    __tablename__ = "booking_day_seq"
    day: date = Field(primary_key=True)
    last: int = 0


class HospitalVisit(SQLModel, table=True):
    """A request for a claim hospital visit (理赔住院探视)."""

    __tablename__ = "hospital_visit"
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    hospital: str = Field(max_length=128)
    ward: str = Field(default="", max_length=64)
    admission_date: date
    status: str = Field(default="open", max_length=16)  # open | done
    created_at: datetime


# --- Staff console and broadcasts -------------------------------------------------------


class StaffAudit(SQLModel, table=True):
    """One staff action: who, what, when, and the record before and after (JSON)."""

    __tablename__ = "staff_audit"
    __table_args__ = (Index("ix_staff_audit_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    staff_openid: str = Field(max_length=64, index=True)  # or the OS user running the CLI
    action: str = Field(max_length=32)  # confirm | complete | no_show | cancel | reply …
    target: str = Field(default="", max_length=64)  # booking number, customer id, message id …
    before: str | None = Field(default=None, sa_type=Text)
    after: str | None = Field(default=None, sa_type=Text)
    at: datetime


class StaffInvite(SQLModel, table=True):
    """A one-time registration code (only its HMAC is kept), redeemed with `#注册 <code>`."""

    __tablename__ = "staff_invite"
    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by: str | None = Field(default=None, max_length=64)


class TierTag(SQLModel, table=True):
    """The WeChat user tag that mirrors one tier (created through the tags API)."""

    __tablename__ = "tier_tag"
    tier: str = Field(primary_key=True, max_length=16)
    tag_id: int = Field(unique=True)
    name: str = Field(max_length=30)


class TagMember(SQLModel, table=True):
    """The tier tag a WeChat user carries on WeChat's side, as far as the bot set it."""

    __tablename__ = "tag_member"
    openid: str = Field(primary_key=True, max_length=64)
    tier: str = Field(max_length=16)
    tag_id: int = Field(index=True)


class BroadcastAllowance(SQLModel, table=True):
    """Broadcasts to one tier in one month (Asia/Shanghai): the row every send locks
    (SELECT … FOR UPDATE) before it counts and adds, so concurrent sends never pass the
    monthly limit."""

    __tablename__ = "broadcast_allowance"
    tier: str = Field(primary_key=True, max_length=16)
    month: str = Field(primary_key=True, max_length=7)  # YYYY-MM
    used: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Broadcast(SQLModel, table=True):
    """One mass send to one tier tag. A staff broadcast to several tiers (or 全部) is one
    row per tier, sharing `batch`. WeChat's MASSSENDJOBFINISH fills in the counts."""

    __tablename__ = "broadcast"
    __table_args__ = (Index("ix_broadcast_tier_month", "tier", "month"),)
    id: int | None = Field(default=None, primary_key=True)
    batch: str = Field(max_length=40, index=True)
    staff_openid: str = Field(max_length=64)
    tier: str = Field(max_length=16)
    tag_id: int
    month: str = Field(max_length=7)  # YYYY-MM (Asia/Shanghai): WeChat's monthly allowance
    content: str = Field(sa_type=Text)
    audience: int = 0  # bound followers of the tier when it was sent (an estimate)
    dedupe_key: str = Field(max_length=160, unique=True)
    created_at: datetime
    msg_id: int | None = Field(default=None, sa_type=BigInteger, index=True)
    status: str | None = Field(default=None, max_length=64)  # MASSSENDJOBFINISH Status
    total_count: int | None = None
    filter_count: int | None = None
    sent_count: int | None = None
    error_count: int | None = None
    finished_at: datetime | None = None


class WechatDoubleState(SQLModel, table=True):
    """Demo only: the state of the local WeChat API double (`serve --demo`: tokens, tags and
    their members, the menu), so that every worker, the CLI and a restart share one double."""

    __tablename__ = "wechat_double_state"
    appid: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=Text)


class YearEndNudge(SQLModel, table=True):
    """A year-end reminder that an unused benefit resets on 1 January: at most one per
    customer, service and year (the primary key), written with its outbox row."""

    __tablename__ = "year_end_nudge"
    customer_id: int = Field(foreign_key="customer.id", primary_key=True)
    service: str = Field(max_length=32, primary_key=True)
    year: int = Field(primary_key=True)
    staff_openid: str = Field(max_length=64)
    created_at: datetime
