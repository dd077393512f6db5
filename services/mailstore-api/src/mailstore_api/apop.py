"""APOP secrets (RFC 1939): stored sealed with AES-GCM under a key derived from the service token.

The key is never on the data volume: a copy of ``users.sqlite3`` alone does not reveal the secrets.
Changing SERVICE_TOKEN makes the stored secrets unreadable (APOP then fails until they are set again).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


class ApopSecrets:
    """Seal, unseal and check APOP secrets."""

    def __init__(self, service_token: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"mailstore-api apop v1",
            info=b"apop-secret-encryption",
        ).derive(service_token.encode())
        self._aead = AESGCM(key)

    def seal(self, username: str, secret: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), username.encode())

    def unseal(self, username: str, sealed: bytes) -> str | None:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], username.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None

    def check(self, username: str, sealed: bytes, timestamp: str, digest: str) -> bool:
        """Whether ``digest`` is the hex MD5 of ``timestamp`` followed by the secret."""
        secret = self.unseal(username, sealed)
        if secret is None:
            return False
        expected = hashlib.md5((timestamp + secret).encode(), usedforsecurity=False).hexdigest()
        return hmac.compare_digest(expected.encode(), digest.strip().lower().encode())
