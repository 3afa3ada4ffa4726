"""Values kept sealed at rest: AES-GCM under a key derived from the server secret
(`SECRET_KEY`) and a purpose, so that what a customer typed mid-flow (a family member's name
and ID number) is never readable in the conversation state (database or Redis)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "s1."


def _key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), f"seal:{purpose}".encode(), hashlib.sha256).digest()


def seal(secret: str, purpose: str, value: str) -> str:
    """`value` encrypted and authenticated for `purpose`, as printable text."""
    nonce = os.urandom(12)
    sealed = AESGCM(_key(secret, purpose)).encrypt(nonce, value.encode(), purpose.encode())
    return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(secret: str, purpose: str, token: str | None) -> str | None:
    """The value `seal` sealed, or None when the token is missing, altered or sealed under
    another secret or purpose."""
    if not token or not token.startswith(_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(token[len(_PREFIX):].encode())
        return AESGCM(_key(secret, purpose)).decrypt(raw[:12], raw[12:], purpose.encode()).decode()
    except (InvalidTag, ValueError):
        return None
