"""Commands that call WeChat's API: `tags sync`, `menu push`, `menu show`; and the settings of
any command that calls it (on the demo's settings, the demo's local WeChat double)."""
from __future__ import annotations

import typer

from bot.cli.common import is_demo, settings
from bot.cli.db import prepare_database
from bot.infra.config import Settings

tags_app = typer.Typer(help="Tier tags on WeChat (for broadcasts).", no_args_is_help=True)
menu_app = typer.Typer(help="The service account's menu.", no_args_is_help=True)

_local_double: str | None = None


def wechat_settings(s: Settings) -> Settings:
    """The settings of a command that calls WeChat's API. On the demo's settings the calls
    go to the demo's WeChat double, as the server's do (its state is the demo database's,
    so it is the very double `serve --demo` mounts), never to api.weixin.qq.com. Call it
    after `prepare_database`."""
    global _local_double
    if not is_demo(s):
        return s
    if _local_double is None:
        from bot.infra.db import make_engine
        from bot.wechat.double import serve_local

        _local_double = serve_local(s.wechat_app_id, s.wechat_app_secret,
                                    make_engine(s.database_url))
        typer.echo("demo settings: WeChat's API is the demo's local double, not "
                   "api.weixin.qq.com", err=True)
    return s.model_copy(update={"wechat_api_base_url": _local_double})


def sync_tags(s: Settings, openids: list[str] | None = None) -> str:
    """Tier tags on WeChat in step with tiers (all bound users, or these); never fails the
    command: a WeChat error is reported and the daily job retries."""
    from bot.domain.broadcasts import sync_tags as sync
    from bot.domain.rules import load_rules
    from bot.infra.db import engine_for
    from bot.infra.wechat_api import make_client

    s = wechat_settings(s)
    engine = engine_for(s, pool_timeout=30)
    try:
        text = sync(engine, make_client(s, engine), load_rules(s.rules_file), openids).render()
    except Exception as exc:
        text = f"tags: not synced ({exc}); the daily tier job retries"
    typer.echo(text)
    return text


@tags_app.command("sync")
def tags_sync() -> None:
    """Create the tier tags on WeChat if missing and put every bound follower in the tag of
    their tier (the daily tier job does this too)."""
    s = settings()
    prepare_database(s)
    text = sync_tags(s)
    if "not synced" in text or "error(s)" in text:
        raise typer.Exit(1)


@menu_app.command("push")
def menu_push() -> None:
    """Check the menu (menus/) against WeChat's limits and create it on WeChat."""
    from bot.infra.wechat_api import WeChatApiError, make_client
    from menus import MenuError, menu_json, validate_menu

    s = settings()
    try:
        data = validate_menu(menu_json())
    except MenuError as exc:
        typer.echo(f"menu not pushed: {exc}", err=True)
        raise typer.Exit(1) from None
    prepare_database(s)
    s = wechat_settings(s)
    from bot.infra.db import engine_for

    try:
        make_client(s, engine_for(s, pool_timeout=30)).menu.create(data)
    except WeChatApiError as exc:
        typer.echo(f"menu not pushed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"menu pushed: {len(data['button'])} buttons, "
               f"{sum(len(b['sub_button']) for b in data['button'])} entries")


@menu_app.command("show")
def menu_show() -> None:
    """Print the menu WeChat has now (menu/get)."""
    from bot.infra.wechat_api import WeChatApiError, make_client

    s = settings()
    prepare_database(s)
    s = wechat_settings(s)
    from bot.infra.db import engine_for

    try:
        got = make_client(s, engine_for(s, pool_timeout=30)).menu.get()
    except WeChatApiError as exc:
        if exc.errcode == 46003:
            typer.echo("WeChat has no menu for this account (python main.py menu push)")
            return
        typer.echo(f"cannot read the menu: {exc}", err=True)
        raise typer.Exit(1) from None
    for top in (got.get("menu") or {}).get("button", []):
        typer.echo(top.get("name", ""))
        for sub in top.get("sub_button", []):
            typer.echo(f"  {sub.get('name', '')}\t{sub.get('type', '')}\t"
                       f"{sub.get('key') or sub.get('url') or ''}")
