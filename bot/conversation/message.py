"""The inbound message as handlers see it: a small typed view over wechatpy's classes (the
door types the XML with `wechatpy.parse_message`), made here and only here, so that no
handler has to guess with `getattr` what kind of message it was given."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    TEXT = "text"  # typed text, or a voice message WeChat recognised (see `voice`)
    CLICK = "click"  # a menu click, with its `key`
    EVENT = "event"  # any other event, named by `event`
    VOICE = "voice"  # a voice message without recognised text
    OTHER = "other"  # image, video, location, link …: named by `type`


@dataclass(frozen=True, slots=True)
class Inbound:
    kind: Kind
    openid: str
    type: str  # WeChat's MsgType
    text: str = ""
    key: str = ""  # the menu key of a click, or the EventKey of another event
    event: str = ""  # lower-case event name, as wechatpy gives it
    menu_id: str = ""  # bizmsgmenuid: which tappable text-menu line was tapped
    voice: bool = False  # the text came from WeChat's speech recognition

    @classmethod
    def of(cls, msg) -> "Inbound":
        openid = msg.source
        mtype = msg.type
        if mtype == "text":
            return cls(Kind.TEXT, openid, mtype, text=msg.content or "",
                       menu_id=str(msg._data.get("bizmsgmenuid") or ""))
        if mtype == "voice":
            heard = (getattr(msg, "recognition", None) or "").strip()
            if heard:
                return cls(Kind.TEXT, openid, mtype, text=heard, voice=True)
            return cls(Kind.VOICE, openid, mtype)
        if mtype == "event":
            event = (msg.event or "").lower()
            key = str(msg._data.get("EventKey") or "")  # a QR code's scene without qrscene_
            if event == "subscribe_scan_product":  # a follow from a product scan: welcomed
                event = "subscribe"  # as any follow (the bot offers no product pages)
            if event == "click":
                return cls(Kind.CLICK, openid, mtype, key=key, event=event)
            return cls(Kind.EVENT, openid, mtype, key=key, event=event)
        return cls(Kind.OTHER, openid, mtype)
