"""The reference: a bare FastAPI + wechatpy endpoint that checks the signature, decrypts in
safe mode, parses the message and echoes its text. No storage, no routing, no templates."""
from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

TOKEN = os.environ["WECHAT_TOKEN"]
crypto = WeChatCrypto(TOKEN, os.environ["WECHAT_ENCODING_AES_KEY"], os.environ["WECHAT_APP_ID"])
app = FastAPI()


@app.post("/wechat")
async def echo(request: Request) -> Response:
    q = request.query_params
    try:
        check_signature(TOKEN, q["signature"], q["timestamp"], q["nonce"])
    except Exception:
        return PlainTextResponse("bad signature", status_code=403)
    body = await request.body()
    aes = q.get("encrypt_type") == "aes"
    if aes:
        body = crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
    msg = parse_message(body)
    xml = TextReply(message=msg, content=getattr(msg, "content", "")).render()
    if aes:
        xml = crypto.encrypt_message(xml, q["nonce"], q["timestamp"])
    return Response(xml, media_type="application/xml")
