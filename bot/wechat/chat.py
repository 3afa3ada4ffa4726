"""`main.py chat`: talk to a running bot from the terminal, signed as WeChat signs."""
from __future__ import annotations

import secrets

import httpx

from bot.wechat.simulator import WeChatSide, event_xml, text_xml


def run_chat(settings, url: str, openid: str, mode: str) -> int:
    """Chat until Ctrl-D; 1 when the bot cannot be reached at all."""
    side = WeChatSide(settings.wechat_token, settings.wechat_app_id,
                      settings.wechat_encoding_aes_key, mode)
    with httpx.Client(timeout=10) as client:
        try:
            first = post(client, side, url, openid, event_xml(openid, "subscribe"))
        except httpx.HTTPError as exc:
            print(f"无法连接 {url}（{exc}）：机器人在运行吗？可先在另一个终端运行 `make run`。")
            return 1
        print(f"已连接 {url}，身份 {openid}。输入文字聊天，/click KEY 模拟点菜单，"
              "/subscribe 模拟关注，Ctrl-D 退出。")
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


def random_openid() -> str:
    return "o" + secrets.token_urlsafe(20)[:27]
