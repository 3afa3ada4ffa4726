"""All handlers, gathered into the bot's root router."""
from __future__ import annotations

from bot.conversation.router import Router


def build_router() -> Router:
    from handlers import (attendance, binding, booking, cancellation, common, staff, tiers,
                          visits)
    from menus import VOCABULARY

    root = Router(VOCABULARY)  # the app's keys and words, handed to the framework
    for module in (common, staff, binding, tiers, booking, cancellation, attendance, visits):
        root.include(module.router)
    return root
