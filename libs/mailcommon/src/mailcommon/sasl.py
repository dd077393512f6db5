"""SASL PLAIN (RFC 4616), as POP3's AUTH PLAIN (RFC 5034) and SMTP's AUTH PLAIN (RFC 4954) read it."""

from __future__ import annotations

import binascii


class SaslError(ValueError):
    """A malformed SASL PLAIN message."""


def decode_plain(b64: bytes) -> tuple[str, str]:
    """RFC 4616 PLAIN: ``[authzid] NUL authcid NUL passwd``, base64; returns (user, password).

    An authorization identity other than the user's own is refused (no proxy logins).
    """
    if b64 == b"=":
        raise SaslError("empty credentials")
    return parse_plain(decode_response(b64))


def decode_response(b64: bytes) -> bytes:
    """A client's SASL response in base64 (RFC 4954 4: ``=`` is an empty one), or SaslError."""
    if b64 == b"=":
        return b""
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64") from None


def parse_plain(raw: bytes) -> tuple[str, str]:
    """The decoded PLAIN message ``[authzid] NUL authcid NUL passwd``: (user, password)."""
    parts = raw.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("malformed PLAIN message")
    authzid, authcid, passwd = parts
    try:
        user, zid, password = authcid.decode(), authzid.decode(), passwd.decode()
    except UnicodeDecodeError:
        raise SaslError("credentials are not UTF-8") from None
    if not user or not password:
        raise SaslError("empty credentials")
    if zid and zid != user:
        raise SaslError("authorization identity differs from authentication identity")
    return user, password
