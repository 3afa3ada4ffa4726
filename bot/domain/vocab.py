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
