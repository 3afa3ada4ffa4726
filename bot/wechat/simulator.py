"""Builds requests to /wechat exactly as WeChat's servers do: the XML they post, the query
string they sign, and safe-mode (AES) encryption through wechatpy's crypto. Used by
`main.py chat`, the benchmark and the tests."""
from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from xml.sax.saxutils import escape

import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

ACCOUNT = "gh_vipservice01"
_ids = itertools.count(int(time.time() * 1000) * 1000)


def cdata(v: str) -> str:
    return "<![CDATA[" + str(v).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_xml(openid: str, content: str, msg_id: int | None = None,
             create_time: int | None = None) -> str:
    return (f"<xml><ToUserName>{cdata(ACCOUNT)}</ToUserName>"
            f"<FromUserName>{cdata(openid)}</FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType>{cdata('text')}</MsgType><Content>{cdata(content)}</Content>"
            f"<MsgId>{msg_id or next(_ids)}</MsgId></xml>")


def event_xml(openid: str, event: str, key: str | None = None,
              create_time: int | None = None, **extra: str) -> str:
    parts = [f"<ToUserName>{cdata(ACCOUNT)}</ToUserName>",
             f"<FromUserName>{cdata(openid)}</FromUserName>",
             f"<CreateTime>{create_time or int(time.time())}</CreateTime>",
             f"<MsgType>{cdata('event')}</MsgType><Event>{cdata(event)}</Event>"]
    if key is not None:
        parts.append(f"<EventKey>{cdata(key)}</EventKey>")
    parts += [f"<{k}>{escape(str(v))}</{k}>" for k, v in extra.items()]
    return "<xml>" + "".join(parts) + "</xml>"


def message_xml(openid: str, msg_type: str, create_time: int | None = None,
                msg_id: int | None = None, **fields: str) -> str:
    body = "".join(f"<{k}>{cdata(v)}</{k}>" for k, v in fields.items())
    return (f"<xml><ToUserName>{cdata(ACCOUNT)}</ToUserName>"
            f"<FromUserName>{cdata(openid)}</FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType>{cdata(msg_type)}</MsgType>{body}<MsgId>{msg_id or next(_ids)}</MsgId></xml>")


def signature(*parts: str) -> str:
    s = WeChatSigner()
    s.add_data(*parts)
    return s.signature


@dataclass
class WeChatSide:
    """Signs (and in safe mode encrypts) a message body the way WeChat does."""

    token: str
    app_id: str = ""
    aes_key: str = ""
    mode: str = "plain"  # plain | compatible | safe

    def request(self, xml: str, openid: str = "", timestamp: int | None = None,
                nonce: str | None = None) -> tuple[dict, bytes]:
        ts = str(timestamp or int(time.time()))
        nonce = nonce or secrets.token_hex(5)
        params = {"signature": signature(self.token, ts, nonce), "timestamp": ts,
                  "nonce": nonce}
        if openid:
            params["openid"] = openid
        if self.mode == "plain":
            return params, xml.encode()
        crypto = WeChatCrypto(self.token, self.aes_key, self.app_id)
        enc = xmltodict.parse(crypto.encrypt_message(xml, nonce, ts))["xml"]
        params.update(encrypt_type="aes", msg_signature=enc["MsgSignature"])
        if self.mode == "safe":
            body = (f"<xml><ToUserName>{cdata(ACCOUNT)}</ToUserName>"
                    f"<Encrypt>{cdata(enc['Encrypt'])}</Encrypt></xml>")
        else:  # compatible: the plaintext fields and the ciphertext side by side
            body = xml.replace("</xml>", f"<Encrypt>{cdata(enc['Encrypt'])}</Encrypt></xml>")
        return params, body.encode()

    def verification(self, echostr: str) -> dict:
        """The query of WeChat's server-URL check (GET /wechat), signed."""
        ts, nonce = str(int(time.time())), secrets.token_hex(5)
        return {"signature": signature(self.token, ts, nonce), "timestamp": ts,
                "nonce": nonce, "echostr": echostr}

    def read_reply(self, body: bytes | str, params: dict | None = None) -> dict:
        """Parse (and in safe mode check and decrypt) the bot's reply; {} for "success"."""
        text = body.decode() if isinstance(body, bytes) else body
        if not text or text == "success":
            return {}
        if self.mode != "plain":
            outer = xmltodict.parse(text)["xml"]
            crypto = WeChatCrypto(self.token, self.aes_key, self.app_id)
            text = crypto.decrypt_message(text, outer["MsgSignature"], outer["TimeStamp"],
                                          outer["Nonce"])
        return dict(xmltodict.parse(text)["xml"])
