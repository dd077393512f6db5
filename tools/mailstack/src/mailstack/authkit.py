"""Keys, messages and DKIM/ARC signatures made in tests and benchmarks with dkimpy, PyNaCl and
openssl, and the zone-file lines that publish the keys."""

from __future__ import annotations

import base64
import functools
import hashlib
import subprocess
import time
from dataclasses import dataclass

import dkim
import nacl.signing
from cryptography.hazmat.primitives import serialization
from dkim.canonicalization import CanonicalizationPolicy

from mailstack.dnsserver import txt

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@dataclass(frozen=True)
class Key:
    private: bytes  # what dkimpy's sign() takes: PEM for RSA, the base64 seed for ed25519
    algorithm: bytes  # a=
    record: str  # the TXT record text

    def published(self, selector: str, under: str = "") -> str:
        """The zone-file line that publishes this key at ``selector._domainkey[.under]``."""
        return f"{selector}._domainkey{'.' + under if under else ''} TXT {txt(self.record)}"


@functools.cache
def rsa_key(bits: int = 2048, name: str = "") -> Key:
    """An RSA key; ``openssl`` makes it, as ``cryptography`` refuses keys under 1024 bits."""
    private = subprocess.run(
        ["openssl", "genrsa", "-traditional", str(bits)], capture_output=True, check=True
    ).stdout
    key = serialization.load_pem_private_key(private, password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(private, b"rsa-sha256", f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


@functools.cache
def ed25519_key() -> Key:
    key = nacl.signing.SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return Key(base64.b64encode(bytes(key)), b"ed25519-sha256", f"v=DKIM1; k=ed25519; p={public}")


def message(domain: str, *, subject: str = "Hello", body: str = "Hello there.\r\n") -> bytes:
    return (
        f"From: Alice <alice@{domain}>\r\n"
        f"To: bob@example.net\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n"
        f"Message-ID: <{time.monotonic_ns()}@{domain}>\r\n"
        "\r\n" + body
    ).encode()


def sign(
    raw: bytes,
    key: Key,
    domain: str,
    selector: str = "sel",
    *,
    canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
    length: bool = False,
) -> bytes:
    """``raw`` with a DKIM-Signature field on top."""
    field = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private,
        canonicalize=canonicalize,
        include_headers=SIGNED_HEADERS,
        length=length,
        signature_algorithm=key.algorithm,
    )
    return bytes(field) + raw


def sign_with_tags(raw: bytes, key: Key, domain: str, selector: str, **tags: str) -> bytes:
    """An rsa-sha256 relaxed/relaxed signature with extra ``tags`` (``x``, ``l``: dkim.sign
    makes no x= and only a true l=), made with dkimpy's own header signer."""
    signer = dkim.DKIM(raw)
    signer.hasher = hashlib.sha256
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(signer.body)).digest())
    fields = [
        (b"v", b"1"),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain.encode()),
        (b"s", selector.encode()),
        (b"t", str(int(time.time()) - 86400).encode()),
        *((name.encode(), value.encode()) for name, value in tags.items()),
        (b"h", b" : ".join(SIGNED_HEADERS)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),
    ]
    private = dkim.crypto.parse_pem_private_key(key.private)
    field = signer.gen_header(fields, SIGNED_HEADERS, policy, b"DKIM-Signature", private)
    return b"DKIM-Signature: " + bytes(field) + raw


def arc_seal(raw: bytes, key: Key, domain: str, selector: str, results: str) -> bytes:
    """``raw`` as a forwarder at ``domain`` passes it on: its Authentication-Results
    (``results``, e.g. ``dkim=pass``) and the next ARC set on top."""
    srv_id = f"mx.{domain}"
    stamped = f"Authentication-Results: {srv_id}; {results}\r\n".encode() + raw
    arc_set = dkim.arc_sign(
        stamped,
        selector.encode(),
        domain.encode(),
        key.private,
        srv_id.encode(),
        include_headers=SIGNED_HEADERS,
    )
    if not arc_set:
        raise ValueError("dkimpy made no ARC set")
    return b"".join(arc_set) + stamped
