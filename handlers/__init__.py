"""All handlers, gathered into the bot's root router."""
from __future__ import annotations

from bot.conversation.router import Router


def build_router() -> Router:
    from handlers import binding, booking, common, staff, tiers, visits

    root = Router()
    for module in (common, staff, binding, tiers, booking, visits):
        root.include(module.router)
    return root
