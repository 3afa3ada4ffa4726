"""All console routes, gathered under /admin."""
from __future__ import annotations

from fastapi import APIRouter

from bot.console import admin, auth, bookings, callbacks, customers, dashboard, records

router = APIRouter()
router.include_router(auth.router)
router.include_router(bookings.router)
router.include_router(callbacks.router)
router.include_router(customers.router)
router.include_router(records.router)
router.include_router(admin.router)
router.include_router(dashboard.router)
