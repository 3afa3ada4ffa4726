"""Text messages to customers' phones, through a pluggable provider."""
from __future__ import annotations

import logging
from typing import Protocol

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from bot.infra.privacy import mask_phone

log = logging.getLogger("bot.infra.sms")


class SmsError(RuntimeError):
    """The message could not be sent now (network, 5xx, rate limit): try again later."""


class SmsRejected(ValueError):
    """The provider refused the message for good (an invalid number, a bad template)."""


class SmsProvider(Protocol):
    sends_codes: bool

    def send(self, phone: str, text: str) -> None: ...


class LogSms:
    """Demo provider: the message goes to the log (and to `sent`, for inspection)."""

    sends_codes = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, phone: str, text: str) -> None:
        self.sent.append((phone, text))
        del self.sent[:-100]
        log.info("SMS to %s: %s", mask_phone(phone), text)

    def send_sms(self, phone: str, template: str, params: list[str], text: str) -> None:
        self.send(phone, text)


class NoSms:
    """No SMS at all: binding succeeds on name, ID number and phone alone. Demo only:
    `serve` refuses SMS_PROVIDER=none (and log) without --demo."""

    sends_codes = False

    def send(self, phone: str, text: str) -> None:
        log.info("SMS to %s not sent (SMS_PROVIDER=none)", mask_phone(phone))

    def send_sms(self, phone: str, template: str, params: list[str], text: str) -> None:
        self.send(phone, text)


class HttpSms:
    """POSTs {"phone", "text"} to a gateway; retried on network errors and 5xx."""

    sends_codes = True

    def __init__(self, url: str, token: str,
                 timeout: httpx.Timeout = httpx.Timeout(5.0, connect=3.0)) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout

    @retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.2, max=2),
           retry=retry_if_exception_type((httpx.TransportError, SmsError)), reraise=True)
    def send(self, phone: str, text: str) -> None:
        res = httpx.post(self._url, json={"phone": phone, "text": text}, headers=self._headers,
                         timeout=self._timeout)
        if res.status_code >= 500:
            raise SmsError(f"gateway answered {res.status_code}")
        if res.status_code >= 400:
            raise SmsRejected(f"gateway refused the message: {res.status_code}")


class TencentSms:
    """Tencent Cloud SMS (短信, API 2021-01-11) through its SDK: a signed template
    (TENCENT_SMS_SIGN_NAME, the approved 签名) and a template id per message
    (TENCENT_SMS_TEMPLATES, `name=id,…`), filled with positional parameters.

    Rate limits (LimitExceeded.*), network errors and 5xx raise `SmsError` (retried by the
    outbox); an invalid number or template (InvalidParameterValue.*, FailedOperation.*
    such as PhoneNumberParseFail) raises `SmsRejected` (dead-lettered). Per-number results
    come back in SendStatusSet with the same codes."""

    sends_codes = True

    def __init__(self, secret_id: str, secret_key: str, *, app_id: str, sign_name: str,
                 templates: dict[str, str], region: str = "ap-guangzhou", endpoint: str = "",
                 timeout: float = 5.0) -> None:
        from tencentcloud.common import credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.sms.v20210111 import sms_client

        http = HttpProfile(reqTimeout=max(1, int(timeout)))
        if endpoint:  # a local double in tests: http://host:port
            scheme, _, host = endpoint.partition("://")
            http.endpoint, http.scheme = (host or scheme).rstrip("/"), (scheme if host else "https")
        profile = ClientProfile(httpProfile=http)
        self._client = sms_client.SmsClient(credential.Credential(secret_id, secret_key), region,
                                            profile)
        self.app_id, self.sign_name, self.templates = app_id, sign_name, templates

    def send(self, phone: str, text: str) -> None:
        raise SmsRejected("Tencent Cloud SMS sends templates only")

    def send_sms(self, phone: str, template: str, params: list[str], text: str) -> None:
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
            TencentCloudSDKException)
        from tencentcloud.sms.v20210111 import models

        template_id = self.templates.get(template)
        if not template_id:
            raise SmsRejected(f"no TENCENT_SMS_TEMPLATES entry for {template!r}")
        req = models.SendSmsRequest()
        req.SmsSdkAppId, req.SignName, req.TemplateId = self.app_id, self.sign_name, template_id
        req.PhoneNumberSet = ["+86" + phone if not phone.startswith("+") else phone]
        req.TemplateParamSet = [str(p) for p in params]
        try:
            res = self._client.SendSms(req)
        except TencentCloudSDKException as exc:
            raise _tencent_error(exc.get_code() or "", exc.get_message() or "") from None
        for status in res.SendStatusSet or []:
            if (status.Code or "").lower() != "ok":
                raise _tencent_error(status.Code or "", status.Message or "")
        log.info("SMS to %s sent (template %s)", mask_phone(phone), template)


def _tencent_error(code: str, message: str) -> Exception:
    text = f"{code}: {message}"
    if code.startswith(("LimitExceeded", "InternalError", "RequestLimitExceeded")) or code in (
            "ServerNetworkError", "ClientNetworkError", "FailedOperation.InsufficientBalanceInSmsPackage"):
        return SmsError(text)
    if code.startswith(("InvalidParameter", "FailedOperation", "UnauthorizedOperation",
                        "UnsupportedOperation", "MissingParameter", "AuthFailure")):
        return SmsRejected(text)
    return SmsError(text)


def make_sms(settings) -> SmsProvider:
    if settings.sms_provider == "http":
        return HttpSms(settings.sms_gateway_url, settings.sms_gateway_token,
                       httpx.Timeout(settings.outbound_read_timeout,
                                     connect=settings.outbound_connect_timeout))
    if settings.sms_provider == "tencent":
        return TencentSms(settings.tencent_secret_id, settings.tencent_secret_key,
                          app_id=settings.tencent_sms_app_id,
                          sign_name=settings.tencent_sms_sign_name,
                          templates=settings.tencent_templates,
                          region=settings.tencent_sms_region,
                          endpoint=settings.tencent_sms_endpoint,
                          timeout=settings.outbound_read_timeout)
    if settings.sms_provider == "none":
        return NoSms()
    return LogSms()
