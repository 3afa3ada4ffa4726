"""`/wechat`: WeChat's server URL. Everything from the network is checked here (signature,
timestamp window, size, XML safety, decryption) before any handler sees it."""
from __future__ import annotations

import hmac
import re
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.parser import parse_message
from wechatpy.replies import TextReply, TransferCustomerServiceReply
from wechatpy.utils import WeChatSigner

from bot.conversation.pipeline import Pipeline
from bot.conversation.reply import Reply
from bot.infra.services import Services
from bot.infra.texts import render

log = logging.getLogger("bot.wechat.door")
router = APIRouter()


SUCCESS = "success"  # WeChat's "no reply"


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _signature(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def verify_query(svc: Services, q) -> tuple[str, str]:
    """Check `signature` and the timestamp window; return (timestamp, nonce)."""
    signature, timestamp, nonce = q.get("signature"), q.get("timestamp"), q.get("nonce")
    if not (signature and timestamp and nonce):
        raise Refused(400, "missing signature, timestamp or nonce")
    if len(timestamp) > 12 or not timestamp.isdigit() or len(nonce) > 64:
        raise Refused(400, "malformed timestamp or nonce")
    expected = _signature(svc.settings.wechat_token, timestamp, nonce)
    if not hmac.compare_digest(expected, signature.lower()):
        raise Refused(403, "bad signature")
    if abs(time.time() - int(timestamp)) > svc.settings.timestamp_window_seconds:
        raise Refused(403, "timestamp outside the window")
    return timestamp, nonce


# Any markup declaration except CDATA: <!DOCTYPE, <!ENTITY, <!ELEMENT, <!-- … WeChat sends none.
_DECLARATION = re.compile(r"<!(?!\[CDATA\[)")


def guard_xml(raw: bytes | str) -> str:
    """The body as text; refused unless it is UTF-8 without any DTD or declaration.

    Without a DTD no entity can be defined, so neither XXE nor entity expansion (billion
    laughs) is possible, and expat rejects any other entity reference as malformed.
    wechatpy's parser (xmltodict) also refuses entity declarations itself: this is the
    cheap, explicit check in front of it.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise Refused(400, "body is not UTF-8") from None
    if _DECLARATION.search(text):
        raise Refused(400, "XML declarations (DTD, entities) are refused")
    return text


def decode(svc: Services, raw: bytes, q, timestamp: str, nonce: str) -> tuple[object, bool]:
    """Return (wechatpy message, encrypted?)."""
    xml = guard_xml(raw)
    encrypted = q.get("encrypt_type", "raw").lower() == "aes"
    if encrypted:
        crypto = svc.crypto
        if crypto is None:
            raise Refused(400, "safe-mode message but WECHAT_ENCODING_AES_KEY is not set")
        msg_signature = q.get("msg_signature")
        if not msg_signature:
            raise Refused(400, "missing msg_signature")
        try:
            xml = crypto.decrypt_message(xml, msg_signature, timestamp, nonce)
        except (InvalidSignatureException, InvalidAppIdException):
            raise Refused(403, "bad msg_signature or app id") from None
        except Exception:  # bad base64, padding, key: all the sender's fault
            raise Refused(400, "undecryptable Encrypt") from None
        xml = guard_xml(xml)
    try:
        msg = parse_message(xml)
        if not (msg.source and msg.type and msg.create_time is not None):
            raise KeyError("FromUserName/MsgType/CreateTime")
    except Exception:  # wechatpy raises ValueError, KeyError, ExpatError, TypeError …
        raise Refused(400, "not a WeChat message") from None
    if len(msg.source) > 64:
        raise Refused(400, "FromUserName too long")
    return msg, encrypted


def dedup_key(msg) -> str:
    msg_id = getattr(msg, "id", None)
    if msg_id:
        return f"m:{msg_id}"
    event = getattr(msg, "event", "") or ""
    key = getattr(msg, "key", None) or getattr(msg, "scene_id", None) or ""
    return f"e:{msg.source}:{int(msg.create_time.timestamp())}:{event}:{key}"[:160]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad Content-Length")
        if int(declared) > limit:
            raise Refused(413, "body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "body too large")
    if not body.strip():
        raise Refused(400, "empty body")
    return bytes(body)


def _refuse(request: Request, exc: Refused) -> Response:
    client = request.client.host if request.client else "?"
    log.warning("refused %s /wechat from %s: %s", request.method, client, exc.reason)
    return PlainTextResponse(exc.reason, status_code=exc.status)


@router.get("/wechat")
async def verify_url(request: Request) -> Response:
    svc: Services = request.app.state.services
    try:
        verify_query(svc, request.query_params)
        echostr = request.query_params.get("echostr", "")
        if not echostr or len(echostr) > 512:
            raise Refused(400, "missing echostr")
    except Refused as exc:
        return _refuse(request, exc)
    return PlainTextResponse(echostr)


def render_reply(msg, reply: Reply) -> str:
    """The wire format of a reply: WeChat's reply XML, or "success" for none."""
    if reply.transfer:
        return TransferCustomerServiceReply(message=msg).render()
    if not reply.text:
        return SUCCESS
    return TextReply(message=msg, content=reply.text).render()


@router.post("/wechat")
async def receive(request: Request) -> Response:
    svc: Services = request.app.state.services
    pipeline: Pipeline = request.app.state.pipeline
    q = request.query_params
    try:
        timestamp, nonce = verify_query(svc, q)
        raw = await read_body(request, svc.settings.max_body_bytes)
        msg, encrypted = decode(svc, raw, q, timestamp, nonce)
    except Refused as exc:
        return _refuse(request, exc)

    try:
        reply = await pipeline.receive(msg, dedup_key(msg))
    except Exception:  # a store or the database is down: apologise, never a 500
        log.exception("could not handle a %s message", msg.type)
        reply = Reply(render("error"))
    xml = render_reply(msg, reply)
    if xml == SUCCESS:
        return PlainTextResponse(SUCCESS)
    if encrypted:
        xml = svc.crypto.encrypt_message(xml, nonce, str(int(time.time())))
    return Response(xml, media_type="application/xml")
