"""The programme's fixed vocabularies, each defined once. Tier codes and service codes are
data in rules.toml; these are the words the code itself branches on. The values are what
the database stores and what the CSV imports accept."""
from __future__ import annotations

from enum import StrEnum


class PolicyStatus(StrEnum):
    IN_FORCE = "in_force"  # 有效
    LAPSED = "lapsed"  # 失效
    SURRENDERED = "surrendered"  # 退保
    TERMINATED = "terminated"  # 终止
    MATURED = "matured"  # 满期


class PaymentMode(StrEnum):
    REGULAR = "regular"  # 期交
    SINGLE = "single"  # 趸交


class Liability(StrEnum):
    HOSPITALIZATION = "hospitalization"
    CRITICAL_ILLNESS = "critical_illness"
    MILD_ILLNESS = "mild_illness"
    DISABILITY = "disability"


class Relation(StrEnum):
    SPOUSE = "spouse"  # 配偶
    PARENT = "parent"  # 父母
    CHILD = "child"  # 子女


class Sex(StrEnum):
    MALE = "M"
    FEMALE = "F"


class Role(StrEnum):
    SPECIALIST = "specialist"  # 健康专员
    ADMIN = "admin"


STAFF_ROLES: tuple[str, ...] = tuple(Role)


class InstitutionKind(StrEnum):
    COMMERCIAL = "commercial"  # 商业体检机构 / 专科机构
    TERTIARY_HOSPITAL = "tertiary_hospital"  # 三甲医院


class BookingStatus(StrEnum):
    SUBMITTED = "submitted"  # 受理
    CONFIRMED = "confirmed"  # 预约成功
    COMPLETED = "completed"  # 已完成
    NO_SHOW = "no_show"  # 爽约 (counted)
    CANCELLED = "cancelled"  # 已取消 (free: not counted)
    CANCELLED_LATE = "cancelled_late"  # 逾期取消 (counted)


WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
