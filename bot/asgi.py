"""ASGI entry for uvicorn (`main.py serve`): settings come from the environment."""
from __future__ import annotations

from bot.app import configure_logging, create_app
from bot.config import get_settings


def make():
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings, mount_double=settings.wechat_double)
