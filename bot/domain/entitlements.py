"""Who may use which value-added service: the tier a customer holds decides (docs/programme.md,
"Services"). One function answers it for every door."""
from __future__ import annotations

from dataclasses import dataclass

from bot.domain.rules import Rules, Service, Tier


@dataclass(frozen=True)
class NotEntitled:
    """Why a tier may not use a service, with what the customer needs and has instead.
    (A booking's refusals are `bookings.Refusal`, a reason code.)"""

    service: Service
    held: Tier
    lowest_entitled: Tier  # the lowest tier that gives the service
    entitled_tiers: tuple[Tier, ...]  # highest first
    has: tuple[Service, ...]  # what the held tier does give


def refusal(rules: Rules, held: Tier, service_code: str) -> NotEntitled | None:
    """None when `held` gives the service; else why not."""
    service = rules.service(service_code)
    if service.offered_to(held.code):
        return None
    entitled = tuple(t for t in rules.tiers if service.offered_to(t.code))
    return NotEntitled(service, held, entitled[-1], entitled, rules.services_for(held.code))
