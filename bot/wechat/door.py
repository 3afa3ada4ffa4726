"""`/wechat`: WeChat's server URL. Everything from the network is checked here (signature,
timestamp window, size, XML safety, decryption) before any handler sees it."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import logging
import time
from datetime import datetime, timedelta, timezone
from xml.parsers import expat

import xmltodict
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.requests import ClientDisconnect
from wechatpy import parse_message
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply, TransferCustomerServiceReply
from wechatpy.utils import WeChatSigner

from bot.conversation.pipeline import Pipeline, Replayed
from bot.conversation.reply import Reply
from bot.infra import logs, metrics
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


# Elements WeChat fills with child elements (menu events' scan, photo and location info,
# mass-send reports); every other element must be plain text.
_CONTAINERS = frozenset({"ScanCodeInfo", "SendPicsInfo", "SendLocationInfo",
                         "CopyrightCheckResult", "ArticleUrlResult", "HardWare"})
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MSG_ID = re.compile(r"[1-9][0-9]{0,19}")  # a positive 64-bit id: at most 20 digits
_CREATE_TIME = re.compile(r"[0-9]{1,12}")
_CST = timezone(timedelta(hours=8))


class _NotFlat(Exception):
    pass


def _flat_fields(xml: str) -> dict | None:
    """What WeChat sends, in one expat pass: a `<xml>` root without attributes whose
    children are text elements without attributes, each once. Their text as xmltodict
    gives it (stripped, None when empty). None for anything else, ill-formed included:
    xmltodict's full parse then decides, so the answer never differs."""
    fields: dict = {}
    depth = 0
    text: list[str] = []

    def start(name, attrs):
        nonlocal depth
        depth += 1
        if attrs or depth > 2 or (depth == 1 and name != "xml") or name in fields:
            raise _NotFlat
        text.clear()

    def end(name):
        nonlocal depth
        if depth == 2:
            fields[name] = "".join(text).strip() or None
        depth -= 1

    def chars(data):
        if depth == 2:
            text.append(data)
        elif data.strip():  # stray text in <xml>
            raise _NotFlat

    parser = expat.ParserCreate("utf-8")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.EntityDeclHandler = _no_entities
    try:
        parser.Parse(xml.encode("utf-8"), True)
    except Exception:
        return None
    return fields or None


def _no_entities(*_args):
    raise _NotFlat


def parse_fields(xml: str) -> dict:
    """The message's elements as a flat dict, checked before wechatpy's classes see them:
    one `<xml>` root, no attributes, no duplicated elements, text where text is expected,
    and the identifiers the bot keys on in their documented shape."""
    fields = _flat_fields(xml)
    if fields is not None:  # the common case, already all of the above
        return fields
    try:
        doc = xmltodict.parse(xml)
    except Exception:  # ExpatError, ValueError: not well-formed
        raise Refused(400, "not well-formed XML") from None
    if not isinstance(doc, dict) or list(doc) != ["xml"] or not isinstance(doc["xml"], dict):
        raise Refused(400, "not a WeChat message (root must be <xml>)")
    fields = doc["xml"]
    for name, value in fields.items():
        if name.startswith(("@", "#")):
            raise Refused(400, "attributes or stray text in <xml>")
        if isinstance(value, list):
            raise Refused(400, f"duplicated element {name[:32]}")
        if isinstance(value, dict) and name not in _CONTAINERS:
            raise Refused(400, f"element {name[:32]} must be text")
    return fields


# The fields of each event the bot reads, in the shape WeChat sends them (an event with a
# field of another shape is refused at the door, never left to fail in its handler).
_COUNT = re.compile(r"[0-9]{1,10}")
_STATUS = re.compile(r"[^\x00-\x1f]{1,256}")
_SCENE = re.compile(r"\S{1,64}")  # a QR code's scene: scene_id (32-bit) or scene_str (1-64)
_TICKET = re.compile(r"\S{1,256}")
_DEGREES = re.compile(r"-?[0-9]{1,3}(\.[0-9]{1,12})?")
_MENU_KEY = re.compile(r"[^\x00-\x1f]{1,128}")  # a click's key: at most 128 bytes
_URL = re.compile(r"\S{1,1024}")
_EVENT_FIELDS: dict[str, dict[str, tuple[re.Pattern, bool]]] = {  # field: (shape, required)
    "masssendjobfinish": {"MsgID": (_MSG_ID, False), "Status": (_STATUS, False),
                          "TotalCount": (_COUNT, False), "FilterCount": (_COUNT, False),
                          "SentCount": (_COUNT, False), "ErrorCount": (_COUNT, False)},
    "templatesendjobfinish": {"MsgID": (_MSG_ID, False), "Status": (_STATUS, False)},
    "subscribe": {"Ticket": (_TICKET, False)},
    "scan": {"EventKey": (_SCENE, False), "Ticket": (_TICKET, False)},
    "location": {"Latitude": (_DEGREES, False), "Longitude": (_DEGREES, False),
                 "Precision": (re.compile(r"[0-9]{1,9}(\.[0-9]{1,12})?"), False)},
    "click": {"EventKey": (_MENU_KEY, True)},
    "view": {"EventKey": (_URL, True)},
}
_ANY_KEY = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f]{0,1024}")  # other events' keys
# A subscribe event's key: none, a QR code's "qrscene_<scene>", or a product scan's.
_SUBSCRIBE_KEY = re.compile(r"qrscene_\S{1,64}|(scanbarcode|scanimage)\|\S{0,1024}")


def check_event(fields: dict) -> None:
    """An event's fields in the shapes WeChat sends (`_EVENT_FIELDS`)."""
    event = fields["Event"].lower()
    key = fields.get("EventKey")
    if event == "subscribe" and key and not _SUBSCRIBE_KEY.fullmatch(key):
        raise Refused(400, "subscribe EventKey of an unknown form")
    if key and not _ANY_KEY.fullmatch(key):
        raise Refused(400, "EventKey too long or with control characters")
    for name, (shape, required) in _EVENT_FIELDS.get(event, {}).items():
        value = fields.get(name)
        if value is None:
            if required:
                raise Refused(400, f"{fields['Event'][:32]} without {name}")
            continue
        if not isinstance(value, str) or not shape.fullmatch(value):
            raise Refused(400, f"{fields['Event'][:32]} {name} is not of WeChat's form")


def check_message(fields: dict) -> None:
    """The fields every message must have, in the shape WeChat sends them."""
    for name in ("FromUserName", "MsgType", "CreateTime"):
        if not fields.get(name):
            raise Refused(400, f"missing {name}")
    if not _OPENID.fullmatch(fields["FromUserName"]):
        raise Refused(400, "FromUserName is not an openid")
    if not _CREATE_TIME.fullmatch(fields["CreateTime"]):
        raise Refused(400, "CreateTime is not a number")
    if "MsgId" in fields and not _MSG_ID.fullmatch(fields["MsgId"] or ""):
        raise Refused(400, "MsgId is not a positive number of at most 20 digits")
    if len(fields["MsgType"]) > 32 or len(fields.get("Event") or "") > 64:
        raise Refused(400, "MsgType or Event too long")
    if fields["MsgType"].lower() == "event":
        if not fields.get("Event"):
            raise Refused(400, "event without Event")
        check_event(fields)


def decode(svc: Services, raw: bytes, q, timestamp: str, nonce: str) -> tuple[object, bool]:
    """Return (wechatpy message, encrypted?).

    The account's mode is a setting, never the request's choice: in compatible and safe
    mode only `encrypt_type=aes` with a `msg_signature` (which covers the ciphertext) is
    genuine, and only the decrypted ciphertext is read. A plain request's signature covers
    token, timestamp and nonce, not the body."""
    xml = guard_xml(raw)
    encrypted = q.get("encrypt_type", "raw").lower() == "aes"
    if svc.settings.encrypted_only and not encrypted:
        raise Refused(400, f"unencrypted message, but the account is in "
                           f"{svc.settings.wechat_message_mode} mode")
    if encrypted:
        crypto = svc.crypto
        if crypto is None:
            raise Refused(400, "safe-mode message but WECHAT_ENCODING_AES_KEY is not set")
        msg_signature = q.get("msg_signature")
        if not msg_signature:
            raise Refused(400, "missing msg_signature")
        outer = parse_fields(xml)
        if not isinstance(outer.get("Encrypt"), str) or not outer["Encrypt"]:
            raise Refused(400, "missing Encrypt")
        try:
            xml = crypto.decrypt_message(outer, msg_signature, timestamp, nonce)
        except (InvalidSignatureException, InvalidAppIdException):
            raise Refused(403, "bad msg_signature or app id") from None
        except Exception:  # bad base64, padding, key: all the sender's fault
            raise Refused(400, "undecryptable Encrypt") from None
        xml = guard_xml(xml)
    fields = parse_fields(xml)
    check_message(fields)
    try:
        # Typed by wechatpy's own parser and registry, once the XML and its fields have
        # passed every check above (a follow from a QR code becomes subscribe_scan, one from
        # a product scan subscribe_scan_product: Inbound.of reads both).
        msg = parse_message(xml)
        if not (msg.source and msg.type):
            raise KeyError("FromUserName/MsgType")
        # wechatpy's `create_time` must convert (a 12-digit CreateTime overflows): checked
        # at Shanghai's fixed +8 hours, which fails exactly where wechatpy's zone does and
        # costs a fraction of its per-call zone lookup.
        datetime.fromtimestamp(int(fields["CreateTime"]), _CST)
    except Exception:  # wechatpy raises ValueError, KeyError, TypeError …
        raise Refused(400, "not a WeChat message") from None
    return msg, encrypted


def dedup_key(msg) -> str:
    """What identifies one message across WeChat's retries: its sender and MsgId (a MsgId
    is unique only per sender: another follower's message may carry the same one), or for
    an event without a MsgId its sender, time, event and key."""
    msg_id = getattr(msg, "id", None)
    if msg_id:
        return f"m:{msg.source}:{msg_id}"
    event = getattr(msg, "event", "") or ""
    key = msg._data.get("EventKey") or ""  # (a product scan's `key` property may raise)
    return f"e:{msg.source}:{int(msg.create_time.timestamp())}:{event}:{key}"[:160]


class Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, at most `limit` bytes, within `timeout` seconds (a client that
    declares more than it sends must not hold a connection and a task open)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad Content-Length")
        if int(declared) > limit:
            raise Refused(413, "body too large")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise Refused(413, "body too large")
    except TimeoutError:
        raise Refused(408, f"body not received within {timeout:g} s") from None
    except ClientDisconnect:
        raise Disconnected() from None
    if not body.strip():
        raise Refused(400, "empty body")
    return bytes(body)


def body_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _refuse(request: Request, exc: Refused) -> Response:
    metrics.REFUSED.labels(str(exc.status)).inc()
    client = request.client.host if request.client else "?"
    log.warning("refused %s /wechat from %s: %s", request.method, client, exc.reason)
    # A body cut short or too large was not read to its end: the connection cannot carry
    # another request, and the client that stalled it gets no second chance on it.
    headers = {"Connection": "close"} if exc.status in (408, 413) else None
    return PlainTextResponse(exc.reason, status_code=exc.status, headers=headers)


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
        return TransferCustomerServiceReply(message=msg, time=reply.at or time.time()).render()
    if not reply.text:
        return SUCCESS
    return TextReply(message=msg, content=reply.text, time=reply.at or time.time()).render()


@router.post("/wechat")
async def receive(request: Request) -> Response:
    # A request id, and once the message is read its MsgId, on every line of its handling.
    with logs.bound((logs.new_request_id(), None)):
        return await _receive(request)


async def _receive(request: Request) -> Response:
    svc: Services = request.app.state.services
    pipeline: Pipeline = request.app.state.pipeline
    q = request.query_params
    try:
        timestamp, nonce = verify_query(svc, q)
        raw = await read_body(request, svc.settings.max_body_bytes,
                              svc.settings.body_timeout_seconds)
        msg, encrypted = decode(svc, raw, q, timestamp, nonce)
    except Refused as exc:
        return _refuse(request, exc)
    except Disconnected:
        client = request.client.host if request.client else "?"
        log.warning("client %s disconnected before sending the whole body", client)
        return Response(status_code=400)

    logs.MSG_ID.set(logs.msg_id_of(msg))
    try:
        # A (timestamp, nonce) pair is one request: the same pair again is WeChat's retry
        # only with the same body (de-duplicated below by MsgId); with another body it is
        # a replayed signature carrying a forged message (checked with the claim).
        reply = await pipeline.receive(msg, dedup_key(msg), (timestamp, nonce, body_digest(raw)))
    except Replayed:
        return _refuse(request, Refused(403, "timestamp and nonce already used with "
                                             "another body"))
    except Exception:  # every store call is in here: a store or the database is down,
        # apologise, never a 500
        log.exception("could not handle a %s message", msg.type)
        metrics.MESSAGES.labels(metrics.message_type(msg), "error").inc()
        reply = Reply(render("error"))
    xml = render_reply(msg, reply)
    if xml == SUCCESS:
        return PlainTextResponse(SUCCESS)
    if encrypted:
        xml = svc.crypto.encrypt_message(xml, nonce, str(int(time.time())))
    return Response(xml, media_type="application/xml")
