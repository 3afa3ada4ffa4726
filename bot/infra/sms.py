"""Text messages to customers' phones, through a pluggable provider."""
from __future__ import annotations

import logging
from typing import Protocol

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from bot.infra.privacy import mask_phone

log = logging.getLogger("bot.infra.sms")


class SmsError(RuntimeError):
    pass


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


class NoSms:
    """No SMS at all: binding succeeds on name, ID number and phone alone. Demo only:
    `serve` refuses SMS_PROVIDER=none (and log) without --demo."""

    sends_codes = False

    def send(self, phone: str, text: str) -> None:
        log.info("SMS to %s not sent (SMS_PROVIDER=none)", mask_phone(phone))


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
            raise ValueError(f"gateway refused the message: {res.status_code}")


def make_sms(settings) -> SmsProvider:
    if settings.sms_provider == "http":
        return HttpSms(settings.sms_gateway_url, settings.sms_gateway_token,
                       httpx.Timeout(settings.outbound_read_timeout,
                                     connect=settings.outbound_connect_timeout))
    if settings.sms_provider == "none":
        return NoSms()
    return LogSms()
