"""Endpoint secrets at rest: AES-256-GCM under a key from the environment.

The secret is needed in the clear to sign (HMAC), so it cannot be hashed like a
password; it is encrypted instead, with the endpoint's id as associated data so
a ciphertext copied onto another row does not decrypt. The key is 32 bytes,
base64, in the variable `webhooks.encryption_key_env` names (for instance
`openssl rand -base64 32`); without it, endpoints cannot be created through the
API. Stored form: version byte 1, 12-byte nonce, ciphertext with its tag.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
KEY_BYTES = 32


class BadKey(ValueError):
    """The environment's encryption key is not base64 of 32 bytes."""


def parse_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise BadKey(f"must hold {KEY_BYTES} random bytes, base64-encoded (openssl rand -base64 32)")
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, secret: str, endpoint_id: int) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, secret.encode("ascii"), _aad(endpoint_id))

    def open(self, sealed: bytes, endpoint_id: int) -> str | None:
        """The secret, or None when it was sealed under another key or row."""
        if not sealed or sealed[:1] != _VERSION:
            return None
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], _aad(endpoint_id)).decode("ascii")
        except InvalidTag:
            return None


def _aad(endpoint_id: int) -> bytes:
    return f"bluesminds webhook endpoint {endpoint_id}".encode()
