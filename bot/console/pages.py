"""All console routes, gathered under /admin."""
from __future__ import annotations

from fastapi import APIRouter

from bot.console import auth, bookings, dashboard

router = APIRouter()
router.include_router(auth.router)
router.include_router(bookings.router)
router.include_router(dashboard.router)
