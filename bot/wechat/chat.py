"""`main.py chat`: talk to a running bot from the terminal, signed as WeChat signs."""
from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from bot.wechat.simulator import WeChatSide, event_xml, text_xml


def run_chat(settings, url: str, openid: str, mode: str, subscribe: bool = False) -> int:
    """Chat until Ctrl-D; 1 when the bot cannot be reached at all. The chat opens with a
    subscribe event only with `subscribe` (a new follower, or asked for): someone who
    already follows the account sends none when they open it again."""
    side = WeChatSide(settings.wechat_token, settings.wechat_app_id,
                      settings.wechat_encoding_aes_key, mode)
    with httpx.Client(timeout=10) as client:
        try:
            if subscribe:
                first = post(client, side, url, openid, event_xml(openid, "subscribe"))
            else:  # a signed URL check (echostr) instead: nothing reaches the handlers
                first = None
                client.get(url, params=side.verification("chat"))
        except httpx.HTTPError as exc:
            print(f"无法连接 {url}（{exc}）：机器人在运行吗？可先在另一个终端运行 `make run`。")
            return 1
        print(f"已连接 {url}，身份 {openid}。输入文字聊天，/click KEY 模拟点菜单，"
              "/subscribe 模拟关注，Ctrl-D 退出。")
        if first is not None:
            show(side, first)
        while True:
            try:
                line = input("你> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if not line:
                continue
            if line.startswith("/click "):
                xml = event_xml(openid, "CLICK", line.split(maxsplit=1)[1].strip())
            elif line == "/subscribe":
                xml = event_xml(openid, "subscribe")
            else:
                xml = text_xml(openid, line)
            try:
                show(side, post(client, side, url, openid, xml))
            except httpx.HTTPError as exc:
                print(f"[连接失败: {exc}]")


def post(client: httpx.Client, side: WeChatSide, url: str, openid: str, xml: str) -> httpx.Response:
    params, body = side.request(xml, openid=openid)
    return client.post(url, params=params, content=body, headers={"Content-Type": "text/xml"})


def show(side: WeChatSide, res: httpx.Response) -> None:
    if res.status_code != 200:
        print(f"[HTTP {res.status_code}: {res.text}]")
        return
    reply = side.read_reply(res.content)
    if not reply:
        print("机器人> （无回复）")
    elif reply.get("MsgType") == "transfer_customer_service":
        print("机器人> [已转接人工客服]")
    else:
        print("机器人> " + reply.get("Content", "").replace("\n", "\n        "))


def follows(settings, openid: str) -> bool | None:
    """Whether `openid` already follows the account, by the bot's database (None when the
    database cannot be read, e.g. a bot elsewhere)."""
    from sqlalchemy import select

    from bot.infra.db import make_engine
    from models import WechatUser

    if settings.is_sqlite and not Path(settings.database_url.split("///", 1)[-1]).is_file():
        return None
    try:
        engine = make_engine(settings.database_url, pool_size=0)
        try:
            with engine.connect() as conn:
                row = conn.execute(select(WechatUser.__table__.c.following)
                                   .where(WechatUser.__table__.c.openid == openid)).first()
        finally:
            engine.dispose()
    except Exception:
        return None
    return bool(row and row[0])


def random_openid() -> str:
    return "o" + secrets.token_urlsafe(20)[:27]
