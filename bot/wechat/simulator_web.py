"""The WeChat simulator (/simulator): a phone-shaped chat page anyone can try the bot with.

On only in the demo (WECHAT_DOUBLE) or when WeChat's API is the local double (a loopback
WECHAT_API_BASE_URL); otherwise none of its routes exist (404).

Every message the page sends is built, signed (and encrypted in compatible or safe mode) by
the same request builder as `main.py chat` and the tests (bot.wechat.simulator, wechatpy's
crypto) and posted to /wechat through the real door. The reply comes back as parts: text,
taps (`weixin://bizmsgmenu` lines, which send what WeChat sends on a tap: a text message
with `bizmsgmenuid`) and links. What the bot pushes later (customer-service messages,
template messages, mass sends) is read from the double's log (`/double/inbox`).
"""
from __future__ import annotations

import html
import ipaddress
import re
import secrets
import tomllib
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session, select

from bot.infra.privacy import mask_name
from bot.infra.texts import TEMPLATES, local
from bot.wechat.simulator import WeChatSide, event_xml, message_xml, text_xml
from menus import menu_json, validate_menu
from models import Customer, WechatUser

STATIC = Path(__file__).resolve().parent.parent / "static" / "simulator"
OPENID = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
KINDS = ("text", "voice", "click", "tap", "subscribe")
MAX_TEXT = 600  # characters; WeChat's own input box takes about this much

_pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
    ["html", "j2"], default=True), trim_blocks=True, lstrip_blocks=True)
_pages.filters["local"] = local


def enabled(settings) -> bool:
    """The demo, or WeChat's API pointed at a double on this machine."""
    if settings.wechat_double:
        return True
    host = urlsplit(settings.wechat_api_base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def double_base(settings) -> str:
    """The double's root (WECHAT_API_BASE_URL without /cgi-bin)."""
    return settings.api_base_url.removesuffix("cgi-bin/").rstrip("/")


# --- What a reply says, in parts the page shows ----------------------------------------------

_ANCHOR = re.compile(r'<a\s+href="([^"]*)"\s*>(.*?)</a>', re.S)


def reply_parts(content: str) -> list[dict]:
    """A text message as WeChat shows it: plain text, tappable menu lines and links. Only
    <a href="…"> is markup in a WeChat text message; everything else is text."""
    parts, pos = [], 0
    for m in _ANCHOR.finditer(content):
        if m.start() > pos:
            parts.append({"text": content[pos:m.start()]})
        href, label = html.unescape(m.group(1)), m.group(2)
        if href.startswith("weixin://bizmsgmenu"):
            q = parse_qs(urlsplit(href).query)
            parts.append({"tap": label, "content": q.get("msgmenucontent", [label])[0],
                          "menu_id": q.get("msgmenuid", [""])[0]})
        elif href.startswith(("https://", "http://")):
            parts.append({"link": label, "href": href})
        else:
            parts.append({"text": label})
        pos = m.end()
    if pos < len(content):
        parts.append({"text": content[pos:]})
    return parts


@lru_cache(maxsize=4)
def _template_cards(path: str) -> dict[str, dict]:
    """templates.toml by WeChat template id: its title and each field's label."""
    p = Path(path)
    raw = tomllib.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    return {str(spec.get("template_id")): {"title": spec.get("title") or name,
                                            "labels": dict(spec.get("labels") or {}),
                                            "order": list((spec.get("fields") or {}).keys())}
            for name, spec in raw.items() if isinstance(spec, dict)}


def pushed(entry: dict, templates_file) -> dict:
    """One message the double received, as the page shows it."""
    body, api = entry["body"], entry["api"]
    seq = entry["seq"]
    if api == "template":
        card = _template_cards(str(templates_file)).get(str(body.get("template_id")), {})
        data = body.get("data") or {}
        order = [k for k in card.get("order", []) if k in data] + [
            k for k in data if k not in card.get("order", [])]
        return {"seq": seq, "kind": "template", "title": card.get("title", "服务通知"),
                "fields": [{"label": card.get("labels", {}).get(k, k),
                            "value": str((data[k] or {}).get("value", ""))} for k in order],
                "url": body.get("url") or ""}
    msgtype = body.get("msgtype")
    via = "mass" if api == "mass" else "custom"
    if msgtype == "text":
        return {"seq": seq, "kind": via, "parts": reply_parts(
            str((body.get("text") or {}).get("content", "")))}
    if msgtype == "news":
        articles = (body.get("news") or {}).get("articles") or [{}]
        return {"seq": seq, "kind": via, "parts": [{"text": "[图文] " + str(
            articles[0].get("title", ""))}]}
    return {"seq": seq, "kind": via, "parts": [{"text": f"[{msgtype}]"}]}


# --- The routes ------------------------------------------------------------------------------


def _people(services) -> list[dict]:
    """Whom the page can speak as: bound followers (masked name, tier), demo first."""
    rules = services.rules
    with Session(services.engine) as session:
        rows = session.exec(
            select(WechatUser.openid, Customer.name, Customer.tier)
            .join(Customer, Customer.id == WechatUser.customer_id)
            .where(WechatUser.following == True)  # noqa: E712 (SQL)
            .order_by(WechatUser.openid.not_like("o_demo_%"), WechatUser.openid)
            .limit(30)).all()
    names = {t.code: t.name for t in rules.tiers}
    return [{"openid": o, "name": mask_name(n), "tier": names.get(t, t)} for o, n, t in rows]


def build_router(settings) -> APIRouter:
    router = APIRouter()
    side = WeChatSide(settings.wechat_token, settings.wechat_app_id,
                      settings.wechat_encoding_aes_key, settings.wechat_message_mode)

    @router.get("/simulator", response_class=HTMLResponse)
    def page(request: Request, openid: str = ""):
        people = _people(request.app.state.services)
        new = not openid or openid == "new" or not OPENID.fullmatch(openid)
        if new:
            openid = "o_sim_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        menu = validate_menu(menu_json())["button"]
        body = _pages.get_template("simulator/chat.html").render(
            people=people, openid=openid, new=new, menu=menu,
            known={p["openid"] for p in people})
        return HTMLResponse(body, headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                                       "style-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'; base-uri 'none'",
            "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"})

    @router.post("/simulator/send")
    async def send(request: Request):
        """Speak as `openid`: {openid, kind, content?, key?, menu_id?}; the bot's reply.
        Only from the page itself: JSON (a cross-site form cannot send it without CORS,
        which is not offered) and, when the browser names it, our own origin."""
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
            return JSONResponse({"error": "只接受模拟器页面的请求"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "需要 JSON 请求"}, status_code=415)
        try:
            said = await request.json()
        except ValueError:
            return JSONResponse({"error": "请求格式不对"}, status_code=400)
        if not isinstance(said, dict):
            return JSONResponse({"error": "请求格式不对"}, status_code=400)
        openid = str(said.get("openid") or "")
        kind = str(said.get("kind") or "")
        content = str(said.get("content") or "").strip()
        if not OPENID.fullmatch(openid) or kind not in KINDS:
            return JSONResponse({"error": "用户或消息类型不对"}, status_code=400)
        if kind in ("text", "voice", "tap") and not content:
            return JSONResponse({"error": "请输入内容"}, status_code=400)
        if len(content) > MAX_TEXT:
            return JSONResponse({"error": f"内容太长（最多{MAX_TEXT}字）"}, status_code=400)
        if kind == "text":
            xml = text_xml(openid, content)
        elif kind == "voice":  # WeChat's speech recognition heard `content`
            xml = message_xml(openid, "voice", MediaId=secrets.token_hex(16), Format="amr",
                              Recognition=content)
        elif kind == "tap":  # a weixin://bizmsgmenu line: WeChat sends its text and id
            xml = message_xml(openid, "text", Content=content,
                              bizmsgmenuid=str(said.get("menu_id") or ""))
        elif kind == "click":
            key = str(said.get("key") or "")
            if not key or len(key) > 128:
                return JSONResponse({"error": "菜单项不对"}, status_code=400)
            xml = event_xml(openid, "CLICK", key)
        else:
            xml = event_xml(openid, "subscribe")
        params, body = side.request(xml, openid=openid)
        transport = httpx.ASGITransport(app=request.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://simulator",
                                     timeout=15) as client:
            res = await client.post("/wechat", params=params, content=body,
                                    headers={"Content-Type": "text/xml"})
        if res.status_code != 200:
            return JSONResponse({"error": f"公众号服务器答复 HTTP {res.status_code}"},
                                status_code=502)
        reply = side.read_reply(res.content)
        if not reply:
            return {"reply": None}
        if reply.get("MsgType") == "transfer_customer_service":
            return {"reply": {"note": "已转接人工客服"}}
        if reply.get("MsgType") == "text":
            return {"reply": {"parts": reply_parts(reply.get("Content") or "")}}
        return {"reply": {"parts": [{"text": f"[{reply.get('MsgType')}]"}]}}

    @router.get("/simulator/inbox")
    async def inbox(openid: str = "", after: int = 0):
        """What the bot pushed to `openid` since `after`, as the double received it."""
        if not OPENID.fullmatch(openid):
            return JSONResponse({"error": "用户不对"}, status_code=400)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                res = await client.get(double_base(settings) + "/double/inbox",
                                       params={"openid": openid, "after": max(after, 0)})
            got = res.json()
        except (httpx.HTTPError, ValueError):
            return JSONResponse({"messages": [], "next": after, "error": "模拟服务器暂时没有答复"})
        return {"messages": [pushed(e, settings.templates_file) for e in got.get("messages", [])],
                "next": got.get("next", after)}

    return router


def mount(app, settings) -> None:
    """The simulator's routes and its static files, when it is on."""
    from fastapi.staticfiles import StaticFiles

    if not enabled(settings):
        return
    app.include_router(build_router(settings))
    app.mount("/simulator/static", StaticFiles(directory=STATIC), name="simulator-static")
