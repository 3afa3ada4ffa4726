"""Sealed values: what must not be readable at rest (a binding code waiting in the outbox,
a family member's name and ID number in a booking flow's state) is kept encrypted with AES-GCM under a key derived from SECRET_KEY (HKDF-SHA256, its own
purpose label), and opened only when it is sent."""
from __future__ import annotations

import base64
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_AAD = b"vipbot-sealed-v1"


def _key(secret: str, purpose: str) -> bytes:
    if not secret:
        raise ValueError("SECRET_KEY is needed to seal a value")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"vipbot:{purpose}".encode()).derive(secret.encode())


def seal(secret: str, purpose: str, value) -> str:
    """`value` (JSON-able) encrypted: base64 of a fresh 12-byte nonce and the ciphertext."""
    nonce = os.urandom(12)
    data = json.dumps(value, ensure_ascii=False).encode()
    return base64.b64encode(nonce + AESGCM(_key(secret, purpose)).encrypt(nonce, data, _AAD)).decode()


def unseal(secret: str, purpose: str, token: str):
    """The value `seal` sealed; ValueError when it cannot be opened (another SECRET_KEY, or
    a tampered token)."""
    try:
        raw = base64.b64decode(token.encode(), validate=True)
        data = AESGCM(_key(secret, purpose)).decrypt(raw[:12], raw[12:], _AAD)
    except (InvalidTag, ValueError, TypeError) as exc:
        raise ValueError("the sealed value cannot be opened") from exc
    return json.loads(data)


def unseal_or_none(secret: str, purpose: str, token: str | None):
    """The value `seal` sealed, or None when there is none or it cannot be opened (a flow's
    state sealed under a SECRET_KEY since rotated counts as not given)."""
    if not token:
        return None
    try:
        return unseal(secret, purpose, token)
    except ValueError:
        return None
