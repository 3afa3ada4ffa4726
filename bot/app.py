"""The FastAPI application."""
from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from bot.conversation.pipeline import Pipeline
from bot.conversation.router import Router
from bot.infra import health, logs, redact
from bot.infra.config import Settings
from bot.wiring import build_services


def build_pipeline(settings: Settings, router: Router | None = None) -> Pipeline:
    """The production pipeline: services (built here, once: bot.wiring), the handlers'
    router, the stores. The FAQ index
    (jieba's dictionary) and the date parser load here, once per process, so that no
    customer waits for them."""
    from bot.conversation import faq
    from bot.domain import dates
    from handlers import build_router

    faq.warm()
    dates.warm_up()
    return Pipeline(build_services(settings), router or build_router())


def create_app(settings: Settings, *, router: Router | None = None,
               pipeline: Pipeline | None = None, mount_double: bool = False) -> FastAPI:
    from bot.wechat.door import router as door

    pipe = pipeline or build_pipeline(settings, router)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Without a separate scheduler process the outbox dispatcher and the reminder sweep
        # run in this process (README, "Messages to customers").
        jobs = None
        if settings.in_process_jobs:
            from scheduler import BackgroundJobs

            jobs = BackgroundJobs(pipe.services).start()
        app.state.jobs = jobs
        yield
        if jobs is not None:
            jobs.stop()
        if getattr(app.state, "double_engine", None) is not None:
            app.state.double_engine.dispose()
        if pipeline is None:
            pipe.close()

    app = FastAPI(title="VIP WeChat bot", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.services = pipe.services
    app.state.pipeline = pipe
    app.include_router(door)
    from bot.wechat import simulator_web

    simulator_web.mount(app, settings)  # /simulator: only in the demo or against the double

    @app.get("/healthz")
    def healthz() -> PlainTextResponse:
        """Liveness: the process answers (nothing else is checked)."""
        return PlainTextResponse("ok")

    redis = health.redis_client(settings.redis_url) if settings.redis_url else None

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Readiness: the database answers, its migrations are at head, Redis (when
        configured) answers. 503 with the failed checks named otherwise."""
        checks = health.readiness(pipe.services.engine, redis)
        failed = sorted(k for k, v in checks.items()
                        if v not in ("ok", "not configured") and not v.startswith("not checked"))
        if failed:
            logging.getLogger("bot.app").warning("not ready: %s", "; ".join(
                f"{k} {checks[k]}" for k in failed))
            return JSONResponse({"status": "not ready", "failed": failed, "checks": checks},
                                status_code=503)
        return JSONResponse({"status": "ready", "checks": checks})

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus metrics (bot.infra.metrics): 404 unless METRICS_ENABLED; with
        METRICS_TOKEN, 401 without `Authorization: Bearer <token>`."""
        from bot.infra import metrics as m

        if not settings.metrics_enabled:
            return PlainTextResponse("Not Found", status_code=404)
        if settings.metrics_token and not hmac.compare_digest(
                request.headers.get("authorization", "").encode(),
                f"Bearer {settings.metrics_token}".encode()):
            return PlainTextResponse("unauthorised", status_code=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return Response(m.exposition(pipe.services.engine), media_type=m.CONTENT_TYPE)

    if settings.admin_enabled:  # the staff web console (README, "The staff console")
        from bot.console import mount as mount_console

        mount_console(app)

    if mount_double:
        from bot.domain.notify import name_fields
        from bot.infra.db import make_engine
        from bot.wechat.double import create_double

        # Its state in the demo database (an engine of its own): every worker mounts the
        # same double, and tags and the menu survive a restart.
        app.state.double_engine = make_engine(settings.database_url)
        app.mount("/wechat-double", create_double(settings.wechat_app_id,
                                                   settings.wechat_app_secret, echo=True,
                                                   engine=app.state.double_engine,
                                                   name_fields=name_fields()))
    return app


def server_options(settings: Settings) -> dict:
    """uvicorn's options for `serve` (and the tests that start the real server): idle
    keep-alive connections close after KEEP_ALIVE_SECONDS. uvicorn has no deadline for
    request headers: production runs behind nginx (README, Deployment)."""
    return {"timeout_keep_alive": settings.keep_alive_seconds, "access_log": False,
            "log_level": settings.log_level.lower()}


# Libraries that log every routine step at INFO: APScheduler two lines per job run (every
# few seconds for the outbox), Alembic two per /readyz and a dozen at start. Shown at
# DEBUG only.
CHATTY_LOGGERS = ("apscheduler", "alembic.runtime.migration", "alembic.runtime.plugins")


_IsoFormatter = logs.IsoFormatter


def log_formatter(tz, fmt: str = "text") -> logging.Formatter:
    return logs.formatter(tz, fmt)


def log_handler(tz, fmt: str = "text", stream=None) -> logging.Handler:
    """The handler every process logs through (to stderr unless `stream`)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_formatter(tz, fmt))
    handler.addFilter(logs.ContextFilter())
    return handler


def configure_logging(level: str, *secrets: str, tz=None, fmt: str = "text") -> None:
    """Log to stderr at `level`, time-stamped in `tz` (TIMEZONE), as text or JSON lines
    (`fmt`, LOG_FORMAT) with the message's ids (bot.infra.logs); every record is redacted
    (bot.infra.redact)."""
    logging.basicConfig(level=level, handlers=[log_handler(tz or ZoneInfo("Asia/Shanghai"), fmt)])
    quiet_chatty_loggers(level)
    redact.install(*secrets)
    redact.install_on_handlers()


def quiet_chatty_loggers(level: str) -> None:
    """The libraries' routine INFO lines off unless the bot logs at DEBUG."""
    chatty = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
