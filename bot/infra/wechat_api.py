"""The bot's client for WeChat's API. Every call, the token fetch included, goes to
WECHAT_API_BASE_URL (a local double in tests and in the demo).

- Every request has a connect and a read timeout (wechatpy fetches its token without one).
- The access token comes from WeChat's `stable_token` endpoint and is shared by every worker
  through Redis or the database (`bot.infra.tokens`), refreshed behind a lock.
- wechatpy's `auto_retry` (unbounded: a token fetch and a retry for each 40001, recursively)
  is off. A call rejected for its token (40001, 40014, 42001) refreshes once and is retried
  once; a forced refresh is rationed (see `bot.infra.tokens`).
- WeChat's JSON errors raise `WeChatApiError(errcode, errmsg)`; a network failure raises it
  with errcode None. Neither ever carries the AppSecret or a token in its text.
"""
from __future__ import annotations

import logging

import requests
from wechatpy import WeChatClient
from wechatpy.crypto import WeChatCrypto

from bot.infra import metrics, redact
from bot.infra.tokens import make_token_store
from bot.infra.wechat_errors import WeChatApiError

__all__ = ["Client", "WeChatApiError", "make_client", "make_crypto"]

log = logging.getLogger(__name__)

WECHAT_HOST = "https://api.weixin.qq.com/"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid credential, invalid / expired token


class _NoSession:
    """wechatpy insists on a session storage; the token lives in `TokenStore` instead."""

    def get(self, key, default=None):
        return default

    def set(self, key, value, ttl=None):
        pass

    def delete(self, key):
        pass


class Client(WeChatClient):
    def __init__(self, appid: str, secret: str, api_base_url: str, *, tokens,
                 timeout: tuple[float, float] = (3.0, 5.0)) -> None:
        super().__init__(appid, secret, session=_NoSession(), timeout=timeout, auto_retry=False)
        self.API_BASE_URL = api_base_url
        self.tokens = tokens  # bot.infra.tokens.TokenStore
        redact.add_secret(secret)

    # --- The token -------------------------------------------------------------------------

    def fetch_stable_token(self, force: bool) -> tuple[str, int]:
        """POST {base}stable_token: (access_token, expires_in). Without `force` WeChat
        returns the token it already holds; with it, a new one (rationed by WeChat)."""
        body = {"grant_type": "client_credential", "appid": self.appid, "secret": self.secret,
                "force_refresh": force}
        result = self._send("post", self.API_BASE_URL + "stable_token", json=body,
                            params=None)
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            raise WeChatApiError(-1, "stable_token answered without an access_token")
        redact.add_token(token)
        return token, int(result.get("expires_in") or 7200)

    def fetch_access_token(self):
        """wechatpy's entry point (a plain, unforced fetch through the shared store)."""
        return {"access_token": self.tokens.refresh(self.fetch_stable_token, rejected=None)}

    @property
    def access_token(self) -> str:
        return self.tokens.get() or self.tokens.refresh(self.fetch_stable_token, rejected=None)

    # --- Calls -----------------------------------------------------------------------------

    def _request(self, method, url_or_endpoint, **kwargs):
        params = dict(kwargs.pop("params", None) or {})
        explicit = "access_token" in params
        token = params["access_token"] if explicit else self.access_token
        try:
            return self._send(method, url_or_endpoint, params={**params, "access_token": token},
                              **kwargs)
        except WeChatApiError as exc:
            if explicit or exc.errcode not in TOKEN_ERRORS:
                raise
            log.info("WeChat rejected the access token (%s); refreshing once", exc.errcode)
        fresh = self.tokens.refresh(self.fetch_stable_token, rejected=token)
        return self._send(method, url_or_endpoint, params={**params, "access_token": fresh},
                          **kwargs)

    def mass_send_text_by_tag(self, tag_id: int, content: str, client_msg_id: str | None = None
                              ) -> dict:
        """A mass text message to the followers carrying user tag `tag_id` (WeChat's
        message/mass/sendall with filter {is_to_all: false, tag_id}; wechatpy still sends the
        legacy group_id). Returns WeChat's answer: msg_id, msg_data_id."""
        data: dict = {"filter": {"is_to_all": False, "tag_id": int(tag_id)},
                      "text": {"content": content}, "msgtype": "text", "send_ignore_reprint": 0}
        if client_msg_id:
            data["clientmsgid"] = client_msg_id[:64]
        return self.post("message/mass/sendall", data=data)

    def _send(self, method, url_or_endpoint, *, params, **kwargs):
        """One HTTP request, with timeouts; errors as WeChatApiError with redacted text."""
        base = kwargs.pop("api_base_url", None) or self.API_BASE_URL
        if base.startswith(WECHAT_HOST):  # some wechatpy APIs name WeChat's host themselves
            base = self.API_BASE_URL.removesuffix("cgi-bin/") + base[len(WECHAT_HOST):]
        if not url_or_endpoint.startswith(("http://", "https://")):
            url_or_endpoint = base + url_or_endpoint
        elif url_or_endpoint.startswith(WECHAT_HOST):
            url_or_endpoint = (self.API_BASE_URL.removesuffix("cgi-bin/")
                               + url_or_endpoint[len(WECHAT_HOST):])
        if isinstance(kwargs.get("data"), dict):
            from wechatpy.utils import json

            kwargs["data"] = json.dumps(kwargs["data"], ensure_ascii=False).encode("utf-8")
        result_processor = kwargs.pop("result_processor", None)
        kwargs["timeout"] = kwargs.get("timeout") or self.timeout
        try:
            res = self._http.request(method=method, url=url_or_endpoint, params=params, **kwargs)
        except requests.RequestException as exc:
            metrics.wechat_api_error(None)
            raise WeChatApiError(None, f"{type(exc).__name__}: {redact.redact(str(exc))}") from None
        if res.status_code >= 400:
            metrics.wechat_api_error(None)
            raise WeChatApiError(None, f"HTTP {res.status_code}")
        return self._handle_result(res, method, url_or_endpoint, result_processor)

    def _handle_result(self, res, method=None, url=None, result_processor=None, **kwargs):
        result = self._decode_result(res) if not isinstance(res, dict) else res
        if not isinstance(result, dict):
            return result
        if "base_resp" in result:
            result.update(result.pop("base_resp"))
        errcode = int(result.get("errcode") or 0)
        if errcode:
            metrics.wechat_api_error(errcode)
            raise WeChatApiError(errcode, str(result.get("errmsg", errcode)))
        return result if not result_processor else result_processor(result)


def make_client(settings, engine=None) -> Client:
    return Client(settings.wechat_app_id, settings.wechat_app_secret, settings.api_base_url,
                  tokens=make_token_store(settings, engine),
                  timeout=(settings.outbound_connect_timeout, settings.outbound_read_timeout))


def make_crypto(settings) -> WeChatCrypto | None:
    if not settings.wechat_encoding_aes_key:
        return None
    return WeChatCrypto(settings.wechat_token, settings.wechat_encoding_aes_key,
                        settings.wechat_app_id)
