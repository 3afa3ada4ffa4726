"""Settings, read from the environment or `.env` (documented in `.env.example`)."""
from __future__ import annotations

import base64
import re
from datetime import time
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message is one line naming it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    wechat_app_id: str = Field(min_length=1)
    wechat_app_secret: str = Field(min_length=1)
    wechat_token: str = Field(min_length=3, max_length=32)
    wechat_encoding_aes_key: str = ""
    # plain | compatible | safe, as chosen in WeChat's console; empty: safe when an
    # EncodingAESKey is set, plain otherwise (filled in by the validator below).
    wechat_message_mode: str = Field(default="", validate_default=True)
    wechat_api_base_url: str = "https://api.weixin.qq.com"

    database_url: str = f"sqlite:///{ROOT / 'data' / 'bot.db'}"
    redis_url: str = ""
    redis_prefix: str = "vipbot:"
    timezone: str = "Asia/Shanghai"
    rules_file: Path = ROOT / "rules.toml"

    # Keys the HMACs of what must not be readable at rest (binding codes, phone numbers).
    secret_key: str = Field(min_length=16)

    # The door
    timestamp_window_seconds: int = Field(default=300, ge=10, le=3600)
    dedup_ttl_seconds: int = Field(default=600, ge=30)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    reply_deadline_seconds: float = Field(default=4.0, gt=0, le=4.5)
    reply_max_bytes: int = Field(default=2048, ge=256, le=2048)
    body_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    keep_alive_seconds: int = Field(default=5, ge=1, le=300)

    # Conversations
    flow_timeout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # The programme's rules below (人工's hours, the festival months, binding's limits) are
    # stated in rules.toml; a setting given here overrides its rule (bot.domain.rules.OVERRIDES).
    human_service_hours: str | None = None
    # After 人工, messages go to the agents until one closes the session, 退出, or no agent
    # has taken it within this many minutes.
    human_wait_minutes: int = Field(default=30, ge=1, le=24 * 60)
    privacy_policy_url: str = "https://www.icbc-axa.com/privacy"
    festival_months: tuple[int, ...] | None = None
    festival_file: Path = ROOT / "festival.toml"

    # Identity binding
    bind_code_ttl_seconds: int = Field(default=300, ge=60, le=3600)
    bind_resend_after_seconds: int = Field(default=60, ge=10, le=600)
    bind_max_failures: int | None = Field(default=None, ge=1, le=100)  # per WeChat account
    bind_lock_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    bind_customer_max_failures: int | None = Field(default=None, ge=1, le=100)  # per customer
    bind_customer_window_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    sms_codes_per_phone_per_hour: int | None = Field(default=None, ge=1, le=1000)
    sms_codes_per_phone_per_day: int | None = Field(default=None, ge=1, le=10000)

    # Connection pool per process (SQLite always uses one connection). Keep the timeout
    # below REPLY_DEADLINE_SECONDS: a message that waited that long gets the apology in time.
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout: float = Field(default=3.0, gt=0, le=60)

    # SMS: log (demo: the text goes to the log), http (a gateway), none (no codes sent)
    sms_provider: str = "log"
    sms_gateway_url: str = ""
    sms_gateway_token: str = ""
    # SMS_PROVIDER=tencent: Tencent Cloud SMS (API keys, the SMS app, the approved signature,
    # and `name=template id` pairs for bind_code, booking_confirmed, reminder).
    tencent_secret_id: str = ""
    tencent_secret_key: str = ""
    tencent_sms_app_id: str = ""
    tencent_sms_sign_name: str = ""
    tencent_sms_templates: str = ""
    tencent_sms_region: str = "ap-guangzhou"
    tencent_sms_endpoint: str = ""  # empty: the SDK's own (sms.tencentcloudapi.com)

    # The outbox (every message to customers) and its dispatcher.
    outbox_rate_per_second: float = Field(default=50.0, gt=0, le=100_000)
    outbox_concurrency: int = Field(default=8, ge=1, le=256)
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
    outbox_max_tries: int = Field(default=12, ge=1, le=100)
    outbox_backoff_base: float = Field(default=2.0, gt=0, le=3600)  # seconds, doubled per try
    outbox_backoff_cap: float = Field(default=600.0, gt=0, le=86400)
    # A claimed row whose worker died is retried after this (keep it well below the ten
    # minutes WeChat de-duplicates a template's client_msg_id).
    outbox_lease_seconds: int = Field(default=60, ge=5, le=300)
    outbox_poll_seconds: float = Field(default=3.0, gt=0, le=3600)
    # Unsent tier-change notices expire after this many days (no stale backlog).
    tier_notice_days: int = Field(default=3, ge=1, le=60)
    # Day-before reminders go out from this hour (the day before the service).
    reminder_hour: str = "10:00"
    # serve runs the outbox dispatcher and the reminder sweep in a background thread unless
    # a separate `python main.py scheduler` runs them (set IN_PROCESS_JOBS=false then).
    in_process_jobs: bool = True
    # Template message ids and field mappings (TOML), and the base of their links (optional).
    templates_file: Path = ROOT / "templates.toml"
    template_url_base: str = ""

    # Outbound HTTP (WeChat's API, the SMS gateway): timeouts, and the two bounded lanes.
    outbound_connect_timeout: float = Field(default=3.0, gt=0, le=30)
    outbound_read_timeout: float = Field(default=5.0, gt=0, le=60)
    wechat_io_workers: int = Field(default=4, ge=1, le=64)
    sms_io_workers: int = Field(default=4, ge=1, le=64)
    outbound_queue_size: int = Field(default=1000, ge=1, le=100_000)
    # WeChat rations forced access-token refreshes (stable_token with force_refresh).
    wechat_force_refresh_daily_cap: int = Field(default=20, ge=1, le=10_000)

    # The staff web console at /admin (README, "The staff console").
    admin_enabled: bool = False
    # The address the bot is reached at (https://…): console cookies are Secure on https.
    public_base_url: str = ""
    admin_session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    admin_session_max_hours: int = Field(default=12, ge=1, le=7 * 24)
    admin_login_max_failures: int = Field(default=5, ge=1, le=100)  # per login and per address
    admin_login_window_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    admin_login_lock_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)

    log_level: str = "INFO"
    # text (time LEVEL logger: message) or json (one JSON object a line, with the message
    # id and a request id on every line of one message's handling).
    log_format: str = "text"
    # Prometheus metrics at /metrics (404 unless enabled); with a token, scrapes must send
    # `Authorization: Bearer <token>`. Never route /metrics through the public server.
    metrics_enabled: bool = False
    metrics_token: str = ""
    # Demo only: mount a local stand-in for WeChat's API at /wechat-double.
    wechat_double: bool = False

    @field_validator("wechat_encoding_aes_key")
    @classmethod
    def _aes_key(cls, v: str) -> str:
        if v and (len(v) != 43 or len(_b64(v)) != 32):
            raise ValueError("must be the 43-character EncodingAESKey from the WeChat console")
        return v

    @field_validator("wechat_message_mode")
    @classmethod
    def _mode(cls, v: str, info) -> str:
        v = v.strip().lower()
        has_key = bool(info.data.get("wechat_encoding_aes_key"))
        if not v:
            return "safe" if has_key else "plain"
        if v not in ("plain", "compatible", "safe"):
            raise ValueError("must be plain, compatible or safe")
        if v != "plain" and not has_key:
            raise ValueError(f"is {v} but WECHAT_ENCODING_AES_KEY is not set")
        return v

    @field_validator("wechat_api_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as https://api.weixin.qq.com")
        return v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://"):]
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL, or empty for the in-process store")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("human_service_hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hours(v)
        return v

    @field_validator("sms_provider")
    @classmethod
    def _sms(cls, v: str) -> str:
        if v not in ("log", "http", "none", "tencent"):
            raise ValueError("must be log, http, tencent or none")
        return v

    @field_validator("sms_gateway_url")
    @classmethod
    def _sms_url(cls, v: str, info) -> str:
        if info.data.get("sms_provider") == "http" and not re.match(r"^https?://", v):
            raise ValueError("must be the gateway's http(s) URL when SMS_PROVIDER=http")
        return v

    @field_validator("reminder_hour")
    @classmethod
    def _reminder_hour(cls, v: str) -> str:
        if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", v.strip()):
            raise ValueError("must look like 10:00")
        return v.strip()

    @field_validator("tencent_sms_templates")
    @classmethod
    def _tencent_templates(cls, v: str, info) -> str:
        pairs = [p for p in v.split(",") if p.strip()]
        if any("=" not in p for p in pairs):
            raise ValueError("must be name=template_id pairs separated by commas")
        if info.data.get("sms_provider") == "tencent" and not pairs:
            raise ValueError("must name the templates when SMS_PROVIDER=tencent")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in ("text", "json"):
            raise ValueError("must be text or json")
        return v

    @field_validator("sms_codes_per_phone_per_day")
    @classmethod
    def _sms_day(cls, v: int, info) -> int:
        if v is not None and v < (info.data.get("sms_codes_per_phone_per_hour") or 0):
            raise ValueError("must be at least SMS_CODES_PER_PHONE_PER_HOUR")
        return v

    # Derived values -----------------------------------------------------
    @property
    def encrypted_only(self) -> bool:
        """Compatible and safe mode: only AES requests (encrypt_type=aes) are genuine."""
        return self.wechat_message_mode != "plain"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def api_base_url(self) -> str:
        """WeChat's API base, always ending in /cgi-bin/ (both spellings are accepted)."""
        base = self.wechat_api_base_url.rstrip("/")
        if not base.endswith("/cgi-bin"):
            base += "/cgi-bin"
        return base + "/"

    @property
    def tencent_templates(self) -> dict[str, str]:
        return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in
                self.tencent_sms_templates.split(",") if p.strip())}

    @property
    def reminder_time(self) -> time:
        hh, mm = self.reminder_hour.split(":")
        return time(int(hh), int(mm))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")



def _b64(v: str) -> bytes:
    try:
        return base64.b64decode(v + "=")
    except ValueError:
        return b""


def parse_hours(v: str) -> tuple[time, time]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", v.strip())
    if not m:
        raise ValueError("must look like 09:00-21:00")
    h1, m1, h2, m2 = map(int, m.groups())
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError as exc:
        raise ValueError("must look like 09:00-21:00") from exc
    if start >= end:
        raise ValueError("start must be before end")
    return start, end


def load_settings(**overrides) -> Settings:
    """Build settings; turn the first validation error into one line that names the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required (set it in the environment or in .env; see .env.example)"
        raise SettingsError(f"Setting {name} {msg}") from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
