"""`serve`: the server process (uvicorn workers on /wechat, the console and the health
doors), refusing the demo's settings outside `--demo`."""
from __future__ import annotations

import os
import sys

import typer

from bot.cli.common import example_values, fail, settings
from bot.cli.db import prepare_database
from bot.infra.config import Settings

# Settings whose .env.example values are placeholders: `serve` refuses them outside --demo.
PLACEHOLDER_SETTINGS = ("WECHAT_TOKEN", "WECHAT_ENCODING_AES_KEY", "WECHAT_APP_SECRET", "SECRET_KEY")
DEMO_SMS_PROVIDERS = ("log", "none")


def refuse_demo_settings(s: Settings) -> None:
    """Production (serve without --demo) refuses the demo's settings, naming the first."""
    example = example_values()
    for name in PLACEHOLDER_SETTINGS:
        if example.get(name) and getattr(s, name.lower()) == example[name]:
            fail(name, "is still the placeholder from .env.example; set your service "
                       "account's value (or run `serve --demo`)")
    if s.sms_provider in DEMO_SMS_PROVIDERS:
        fail("SMS_PROVIDER", f"{s.sms_provider} is for the demo only (binding codes "
                             f"{'go to the log' if s.sms_provider == 'log' else 'are not sent'}); "
                             f"set SMS_PROVIDER=http and SMS_GATEWAY_URL (or run `serve --demo`)")
    if s.wechat_double:
        fail("WECHAT_DOUBLE", "is for the demo only; set WECHAT_DOUBLE=false (or run `serve --demo`)")


def serve(host: str = "127.0.0.1", port: int = 8000,
          workers: int = typer.Option(1, min=1, max=64),
          demo: bool = typer.Option(False, help="Mount a local WeChat API double and use it; "
                                                "allows the demo's settings.")) -> None:
    """Serve /wechat. Without --demo, the placeholders of .env.example and the demo SMS
    providers (log, none) are refused."""
    import uvicorn

    if demo:
        os.environ["WECHAT_DOUBLE"] = "1"
        loopback = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        os.environ["WECHAT_API_BASE_URL"] = f"http://{loopback}:{port}/wechat-double"
    s = settings()
    if not demo:
        refuse_demo_settings(s)
    if workers > 1 and s.is_sqlite and not s.redis_url:
        typer.echo("SQLite runs one worker; set DATABASE_URL to PostgreSQL (or REDIS_URL) "
                   "for --workers > 1", err=True)
        raise typer.Exit(2)
    prepare_database(s, redis=True)
    if s.metrics_enabled:  # PROMETHEUS_MULTIPROC_DIR: only the running processes' files
        from bot.infra.metrics import clean_multiproc_dir

        clean_multiproc_dir()
    typer.echo(serving_banner(host, port, demo, admin=s.admin_enabled))
    from bot.app import server_options

    from bot.infra.logs import uvicorn_log_config

    uvicorn.run("bot.asgi:make", factory=True, host=host, port=port, workers=workers,
                log_config=uvicorn_log_config(s.timezone, s.log_format, s.log_level),
                **server_options(s))


def serving_banner(host: str, port: int, demo: bool, *, admin: bool = False) -> str:
    """What `serve` prints at start: every address it serves, and how to talk to it; in
    the demo first the simulator and the console with the demo admin's login."""
    base = f"http://{host}:{port}"
    lines = []
    if demo:
        lines.append(f"Try the bot in a browser: {base}/simulator")
    if admin:
        login = ""
        if demo:
            from bot.demo import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD

            login = f"  (demo admin: {DEMO_ADMIN_LOGIN} / {DEMO_ADMIN_PASSWORD})"
        lines.append(f"Staff console: {base}/admin{login}")
    lines += [f"Serving WeChat's server URL at {base}/wechat",
              f"  liveness  {base}/healthz",
              f"  readiness {base}/readyz"]
    if demo:
        lines.append(f"  WeChat API double (demo) {base}/wechat-double")
    if host in ("0.0.0.0", "::"):
        lines.append("  (every interface: use this machine's address from elsewhere)")
    chat_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/wechat"
    lines.append(f"Talk to it from another terminal: {sys.executable} main.py chat "
                 f"--url {chat_url} [--openid o_demo_gold]")
    return "\n".join(lines)
