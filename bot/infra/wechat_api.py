"""The bot's client for WeChat's API. Every call, the token fetch included, goes to
WECHAT_API_BASE_URL (a local double in tests and in the demo)."""
from __future__ import annotations

from wechatpy import WeChatClient
from wechatpy.crypto import WeChatCrypto
from wechatpy.session.memorystorage import MemoryStorage


class Client(WeChatClient):
    def __init__(self, appid: str, secret: str, api_base_url: str, **kw) -> None:
        super().__init__(appid, secret, **kw)
        self.API_BASE_URL = api_base_url

    def fetch_access_token(self):
        # wechatpy hard-codes api.weixin.qq.com here; use the configured host instead.
        return self._fetch_access_token(
            url=self.API_BASE_URL + "token",
            params={"grant_type": "client_credential", "appid": self.appid,
                    "secret": self.secret},
        )


def make_client(settings) -> Client:
    if settings.redis_url:
        import redis
        from wechatpy.session.redisstorage import RedisStorage

        storage = RedisStorage(redis.Redis.from_url(settings.redis_url), prefix=settings.redis_prefix + "wx")
    else:
        storage = MemoryStorage()
    return Client(settings.wechat_app_id, settings.wechat_app_secret, settings.api_base_url,
                  session=storage, timeout=5)


def make_crypto(settings) -> WeChatCrypto | None:
    if not settings.wechat_encoding_aes_key:
        return None
    return WeChatCrypto(settings.wechat_token, settings.wechat_encoding_aes_key,
                        settings.wechat_app_id)
