"""`main.py chat`: talk to a running bot from the terminal, signed as WeChat signs."""
from __future__ import annotations

import secrets

import httpx

from bot.wechat.simulator import WeChatSide, event_xml, text_xml


def run_chat(settings, url: str, openid: str, mode: str) -> None:
    side = WeChatSide(settings.wechat_token, settings.wechat_app_id,
                      settings.wechat_encoding_aes_key, mode)
    print(f"已连接 {url}，身份 {openid}。输入文字聊天，/click KEY 模拟点菜单，"
          "/subscribe 模拟关注，Ctrl-D 退出。")
    with httpx.Client(timeout=10) as client:
        send(client, side, url, openid, event_xml(openid, "subscribe"))
        while True:
            try:
                line = input("你> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return
            if not line:
                continue
            if line.startswith("/click "):
                xml = event_xml(openid, "CLICK", line.split(maxsplit=1)[1].strip())
            elif line == "/subscribe":
                xml = event_xml(openid, "subscribe")
            else:
                xml = text_xml(openid, line)
            send(client, side, url, openid, xml)


def send(client: httpx.Client, side: WeChatSide, url: str, openid: str, xml: str) -> None:
    params, body = side.request(xml, openid=openid)
    try:
        res = client.post(url, params=params, content=body,
                          headers={"Content-Type": "text/xml"})
    except httpx.HTTPError as exc:
        print(f"[连接失败: {exc}]")
        return
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
