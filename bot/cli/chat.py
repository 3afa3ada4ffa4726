"""`chat`: talk to a running bot from the terminal, each line signed as WeChat signs it."""
from __future__ import annotations

import typer

from bot.cli.common import settings


def chat(openid: str = typer.Option("", help="Whose account to speak from (default: new)."),
         url: str = "http://127.0.0.1:8000/wechat",
         mode: str = typer.Option("", help="plain | compatible | safe (default: the "
                                           "WECHAT_MESSAGE_MODE setting, as the bot expects)"),
         subscribe: bool = typer.Option(False, "--subscribe",
                                        help="Start with a subscribe event even for someone "
                                             "who already follows (a new follower gets one "
                                             "anyway).")) -> None:
    """Chat with a running bot from the terminal; each line is signed as WeChat signs it.
    A new follower (no --openid, or one the bot's database does not know as following)
    starts with the subscribe event WeChat sends on 关注."""
    from bot.wechat.chat import follows, random_openid, run_chat

    if mode not in ("", "plain", "compatible", "safe"):
        raise typer.BadParameter("mode must be plain, compatible or safe")
    s = settings()
    mode = mode or s.wechat_message_mode
    if mode != "plain" and not s.wechat_encoding_aes_key:
        typer.echo("Setting WECHAT_ENCODING_AES_KEY is required for safe mode", err=True)
        raise typer.Exit(2)
    new = not openid or follows(s, openid) is False
    raise typer.Exit(run_chat(s, url, openid or random_openid(), mode, subscribe=subscribe or new))
