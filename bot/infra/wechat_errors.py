"""The error of WeChat's API, on its own so that the client (`bot.infra.wechat_api`) and the
token store (`bot.infra.tokens`) both use it without importing each other."""
from __future__ import annotations

from wechatpy.exceptions import WeChatClientException

from bot.infra import redact


class WeChatApiError(WeChatClientException):
    """WeChat answered an error (errcode, errmsg), or could not be reached (errcode None)."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(errcode, redact.redact(str(errmsg)))

    def __str__(self) -> str:
        if self.errcode is None:
            return f"WeChat API unreachable: {self.errmsg}"
        return f"WeChat API error {self.errcode}: {self.errmsg}"

    __repr__ = __str__
