"""The programme's rules (rules.toml) as validated, frozen data.

`load_rules(path)` reads and checks the whole file and raises `RulesError` with one line
naming the file and the first bad key, e.g.
``rules.toml: tiers[gold].threshold: must be lower than tiers[platinum].threshold (300000)``.
List entries are named by their code when they have one, else by position (``[#2]``, from 1).
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from bot.infra.config import parse_hours
from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, StringConstraints,
                      ValidationError, field_validator)

QUOTA_KINDS = ("unlimited", "per_claim", "events")


class RulesError(ValueError):
    """The rules file is unreadable or invalid; the message is one line naming the key."""


def _code(max_length: int):
    return Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=max_length)]


TierCode = _code(16)  # fits customer.tier
Code = _code(32)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Money = Annotated[Decimal, Field(ge=0, decimal_places=2)]
# Four decimal places at most, so that the SQL engine can weigh fen in exact integers.
Weight = Annotated[Decimal, Field(ge=0, le=1, decimal_places=4)]
Years = Annotated[int, Field(strict=True, ge=0, le=100)]


def _quota(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if value in QUOTA_KINDS:
        return value
    raise ValueError('must be a whole number of uses per year (1 or more), '
                     '"unlimited", "per_claim" or "events"')


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(_Frozen):
    code: TierCode
    name: Text
    threshold: Money  # CNY, lower bound inclusive


class Weights(_Frozen):
    """Weight of each policy amount; the field names are `models.Policy`'s columns."""

    annualized_basic_premium: Weight
    single_premium: Weight
    annual_regular_topup: Weight
    initial_lump_sum_topup: Weight
    irregular_topup: Weight

    def items(self) -> tuple[tuple[str, Decimal], ...]:
        """(policy column, weight) pairs."""
        return tuple((name, getattr(self, name)) for name in type(self).model_fields)


class Contribution(_Frozen):
    tail_years: Years
    single_premium_payment_years: Annotated[Years, Field(ge=1)]
    weights: Weights


class Reviews(_Frozen):
    downgrade_dates: tuple[str, ...] = Field(min_length=1)  # MM-DD

    @field_validator("downgrade_dates")
    @classmethod
    def _month_days(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not re.fullmatch(r"\d\d-\d\d", value) or not _valid_month_day(value):
                raise ValueError(f"{value!r} is not a date of every year written MM-DD")
        if len(set(values)) != len(values):
            raise ValueError("a date is listed twice")
        return tuple(sorted(values))

    @property
    def month_days(self) -> tuple[tuple[int, int], ...]:
        """(month, day) of each review, in calendar order."""
        return tuple((int(v[:2]), int(v[3:])) for v in self.downgrade_dates)


def _valid_month_day(value: str) -> bool:
    try:
        date(2001, int(value[:2]), int(value[3:]))  # a common year: 02-29 is not every year
    except ValueError:
        return False
    return True


class BasicServices(_Frozen):
    tiers: tuple[TierCode, ...]
    items: tuple[Text, ...] = Field(min_length=1)


class Package(_Frozen):
    tier: TierCode
    code: Code
    name: Text
    content: str = ""
    sex: Literal["M", "F"] | None = None  # None: for anyone
    venues: tuple[Text, ...] = ()


class Service(_Frozen):
    code: Code
    name: Text
    tiers: tuple[TierCode, ...] = Field(min_length=1)
    quota: Annotated[int | str, PlainValidator(_quota)]
    family: Annotated[bool, Field(strict=True)]
    description: str = ""
    packages: tuple[Package, ...] = ()
    named_expert_tiers: tuple[TierCode, ...] = ()
    choices: tuple[Text, ...] = ()
    # Everyday words for a choice (核磁 for 核磁共振检查), each naming that choice alone.
    choice_words: dict[Text, tuple[Text, ...]] = {}

    @field_validator("choice_words")
    @classmethod
    def _words_of_choices(cls, value: dict, info: Any) -> dict:
        unknown = set(value) - set(info.data.get("choices", ()))
        if unknown:
            raise ValueError(f"words for choices not listed: {sorted(unknown)}")
        said = [w for words in value.values() for w in words]
        if len(said) != len(set(said)):
            raise ValueError("a word may name one choice only")
        return value

    def words_for(self, choice: str) -> tuple[str, ...]:
        """What a customer may say for `choice`: its name without 检查, and its words."""
        stem = choice.removesuffix("检查")
        return tuple(dict.fromkeys(((stem,) if stem != choice else ()) + self.choice_words.get(choice, ())))

    @property
    def per_year(self) -> int | None:
        """Uses per calendar year, or None when the quota is not counted per year."""
        return self.quota if isinstance(self.quota, int) else None

    def offered_to(self, tier: str) -> bool:
        return tier in self.tiers

    def packages_for(self, tier: str, sex: str | None = None) -> tuple[Package, ...]:
        """The tier's packages; with `sex`, only those open to that sex."""
        return tuple(p for p in self.packages
                     if p.tier == tier and (sex is None or p.sex in (None, sex)))

    def may_name_expert(self, tier: str) -> bool:
        return tier in self.named_expert_tiers


def _clock(value: Any) -> time:
    if isinstance(value, str) and re.fullmatch(r"\d\d:\d\d", value):
        try:
            return time(int(value[:2]), int(value[3:]))
        except ValueError:
            pass
    raise ValueError('must be a time of day written "HH:MM"')


InstitutionKind = Literal["commercial", "tertiary_hospital"]


class Booking(_Frozen):
    """How appointments are booked and cancelled (洁牙, 体检, 专家门诊, 特种检查)."""

    services: tuple[Code, ...]
    lead_workdays: Annotated[int, Field(strict=True, ge=0, le=30)]
    window_days: Annotated[int, Field(strict=True, ge=1, le=366)]
    cancel_cutoff: Annotated[time, PlainValidator(_clock)]
    confirm_grace_hours: Annotated[int, Field(strict=True, ge=0, le=168)]
    dates_offered: Annotated[int, Field(strict=True, ge=1, le=9)]
    # The services whose medical fees (挂号费, 检查费 …) the customer pays; the booking's
    # summary and confirmation say so.
    customer_pays_fees: tuple[Code, ...]
    # The services a customer service officer escorts at a 三甲 hospital.
    escorted_at_tertiary: tuple[Code, ...]
    # What a package's `venues` name, as institution kinds (commercial | tertiary_hospital).
    venue_kinds: dict[Text, InstitutionKind]
    # What customers and staff read for each institution kind (the import's `kind` column),
    # whatever the service: a dental clinic is a 商业机构 too.
    kind_names: dict[InstitutionKind, Text]

    def kind_name(self, kind: str) -> str:
        return self.kind_names.get(kind, kind)


Month = Annotated[int, Field(strict=True, ge=1, le=12)]
Count = Annotated[int, Field(strict=True, ge=1, le=10000)]
Minutes = Annotated[int, Field(strict=True, ge=1, le=7 * 24 * 60)]


class Festival(_Frozen):
    """The customer service festival (客户服务节): its months (docs/programme.md: July and August)."""

    months: tuple[Month, ...] = Field(min_length=1)


def _hours(value: Any) -> tuple[time, time]:
    if isinstance(value, tuple):
        return value
    if not isinstance(value, str):
        raise ValueError('must look like "09:00-21:00"')
    return parse_hours(value)


class HumanService(_Frozen):
    """When 人工 reaches a human agent (daily, Asia/Shanghai); outside them the hotline."""

    hours: Annotated[tuple[time, time], PlainValidator(_hours)]


class Binding(_Frozen):
    """The limits of identity binding (绑定) against guessing."""

    max_failures: Annotated[int, Field(strict=True, ge=1, le=100)]  # per WeChat account
    lock_minutes: Minutes
    customer_max_failures: Annotated[int, Field(strict=True, ge=1, le=100)]  # per customer
    customer_window_minutes: Minutes
    sms_codes_per_phone_per_hour: Count
    sms_codes_per_phone_per_day: Count


class Contact(_Frozen):
    """The numbers customers call (docs/programme.md: the hotline 95359, 健康顾问 95359-8-1)."""

    hotline: Text  # 全国客户服务热线
    service_line: Text  # 健康顾问 and the value-added services' bookings


class Rules(_Frozen):
    tiers: tuple[Tier, ...] = Field(min_length=1)  # highest first
    contribution: Contribution
    reviews: Reviews
    basic_services: BasicServices
    services: tuple[Service, ...] = ()
    # Every figure below is stated in rules.toml, once: no default in code.
    booking: Booking
    festival: Festival
    human_service: HumanService
    binding: Binding
    contact: Contact

    # --- Tiers ---------------------------------------------------------------------------
    def tier(self, code: str) -> Tier:
        for tier in self.tiers:
            if tier.code == code:
                return tier
        raise KeyError(f"unknown tier {code!r}")

    def has_tier(self, code: str) -> bool:
        return any(t.code == code for t in self.tiers)

    def tier_rank(self, code: str) -> int:
        """0 for the lowest tier, one more for each tier above it."""
        return len(self.tiers) - 1 - self.tiers.index(self.tier(code))

    def tier_for(self, value: Decimal) -> Tier:
        """The highest tier whose threshold `value` reaches (the lowest tier for anything less)."""
        return next((t for t in self.tiers if value >= t.threshold), self.tiers[-1])

    def next_tier(self, code: str) -> Tier | None:
        """The tier just above `code`, or None at the top."""
        index = self.tiers.index(self.tier(code))
        return self.tiers[index - 1] if index else None

    @property
    def lowest(self) -> Tier:
        return self.tiers[-1]

    def is_vip(self, code: str) -> bool:
        """Every tier above the lowest is a VIP tier."""
        return self.tier(code) != self.lowest

    # --- Services ------------------------------------------------------------------------
    def service(self, code: str) -> Service:
        for service in self.services:
            if service.code == code:
                return service
        raise KeyError(f"unknown service {code!r}")

    def services_for(self, code: str) -> tuple[Service, ...]:
        """The value-added services of a tier, in the file's order."""
        self.tier(code)
        return tuple(s for s in self.services if s.offered_to(code))

    def bookable_services_for(self, code: str) -> tuple[Service, ...]:
        """The services of a tier that are booked by appointment."""
        return tuple(s for s in self.services_for(code) if s.code in self.booking.services)

    def lowest_tier_with(self, service_code: str) -> Tier | None:
        """The lowest tier entitled to a service (what a customer would need to reach)."""
        service = self.service(service_code)
        return next((t for t in reversed(self.tiers) if service.offered_to(t.code)), None)

    def basic_services_for(self, code: str) -> tuple[str, ...]:
        self.tier(code)
        return self.basic_services.items if code in self.basic_services.tiers else ()


# --- Settings that override a rule ----------------------------------------------------------

# A deployment may override these rules with a setting (environment or .env); a setting that
# is not given leaves the rule as rules.toml states it.
OVERRIDES: dict[str, tuple[str, str]] = {
    "festival_months": ("festival", "months"),
    "human_service_hours": ("human_service", "hours"),
    "bind_max_failures": ("binding", "max_failures"),
    "bind_lock_minutes": ("binding", "lock_minutes"),
    "bind_customer_max_failures": ("binding", "customer_max_failures"),
    "bind_customer_window_minutes": ("binding", "customer_window_minutes"),
    "sms_codes_per_phone_per_hour": ("binding", "sms_codes_per_phone_per_hour"),
    "sms_codes_per_phone_per_day": ("binding", "sms_codes_per_phone_per_day"),
}


def with_settings(rules: Rules, settings: Any) -> Rules:
    """`rules` with the settings of OVERRIDES that were given (settings.model_fields_set)."""
    given = getattr(settings, "model_fields_set", set())
    sections: dict[str, dict[str, Any]] = {}
    for name, (section, key) in OVERRIDES.items():
        if name in given:
            value = getattr(settings, name)
            if name == "human_service_hours":
                value = parse_hours(value)
            elif name == "festival_months":
                value = tuple(value)
            sections.setdefault(section, {})[key] = value
    if not sections:
        return rules
    return rules.model_copy(update={section: getattr(rules, section).model_copy(update=values)
                                    for section, values in sections.items()})


# --- Loading ------------------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


def load_rules(path: str | Path) -> Rules:
    """Read and check the rules file; raise `RulesError` (one line) on the first problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise RulesError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: not valid TOML: {exc}") from None
    try:
        rules = Rules.model_validate(raw)
        _cross_check(rules)
    except ValidationError as exc:
        raise RulesError(f"{path}: {_describe(exc, raw)}") from None
    except _Bad as exc:
        raise RulesError(f"{path}: {exc}") from None
    return rules


def _describe(exc: ValidationError, raw: dict) -> str:
    errors = exc.errors(include_url=False)
    # A misspelt key shows as both "unknown" and "missing": name the misspelling.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key, node = "", raw
    for part in error["loc"]:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            code = item.get("code") if isinstance(item, dict) else None
            key += f"[{code}]" if isinstance(code, str) and code else f"[#{part + 1}]"
            node = item
        else:
            key += f".{part}" if key else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    if error["type"] == "missing":
        return f"{key}: missing"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = error["msg"].removeprefix("Value error, ")
    got = error["input"]
    got = str(got) if isinstance(got, Decimal) else repr(got)
    return " ".join(f"{key}: {message} (got {got})".split())


def _cross_check(rules: Rules) -> None:
    """What one field alone cannot tell: order, uniqueness and references."""
    _unique("tiers", (t.code for t in rules.tiers))
    for upper, lower in zip(rules.tiers, rules.tiers[1:]):
        if lower.threshold >= upper.threshold:
            raise _Bad(f"tiers[{lower.code}].threshold", f"must be lower than "
                       f"tiers[{upper.code}].threshold ({upper.threshold})")
    if rules.lowest.threshold != 0:
        raise _Bad(f"tiers[{rules.lowest.code}].threshold",
                   "the last (lowest) tier's threshold must be 0")
    tiers = [t.code for t in rules.tiers]
    _known("basic_services.tiers", rules.basic_services.tiers, tiers)
    _unique("services", (s.code for s in rules.services))
    _unique("services.packages", (p.code for s in rules.services for p in s.packages))
    for service in rules.services:
        key = f"services[{service.code}]"
        _known(f"{key}.tiers", service.tiers, tiers)
        _known(f"{key}.named_expert_tiers", service.named_expert_tiers, service.tiers)
        for package in service.packages:
            _known(f"{key}.packages[{package.code}].tier", (package.tier,), service.tiers)
            _known(f"{key}.packages[{package.code}].venues", package.venues,
                   tuple(rules.booking.venue_kinds))
    _known("booking.services", rules.booking.services, [s.code for s in rules.services])
    _known("booking.customer_pays_fees", rules.booking.customer_pays_fees, rules.booking.services)
    _known("booking.escorted_at_tertiary", rules.booking.escorted_at_tertiary,
           rules.booking.services)
    _known("booking.venue_kinds", dict.fromkeys(rules.booking.venue_kinds.values()),
           tuple(rules.booking.kind_names))


def _unique(key: str, codes: Iterable[str]) -> None:
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            raise _Bad(f"{key}[{code}]", f"code {code!r} is used twice")
        seen.add(code)


def _known(key: str, codes: Iterable[str], allowed: Sequence[str]) -> None:
    seen: set[str] = set()
    for code in codes:
        if code not in allowed:
            raise _Bad(key, f"{code!r} is not one of {', '.join(allowed)}")
        if code in seen:
            raise _Bad(key, f"{code!r} is listed twice")
        seen.add(code)
