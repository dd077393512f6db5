"""DKIM signing of outgoing mail (RFC 6376) with dkimpy, and the key pairs it signs with.

Every message is signed twice, as RFC 8463 section 4 advises while ed25519 is not verified
everywhere: ``rsa-sha256`` with a 2048-bit key and ``ed25519-sha256``, both relaxed/relaxed
(relaxed header canonicalization survives refolding, relaxed body trailing-whitespace changes
by relays). dkimpy does the canonicalization and cryptography (the same library verifies in
:mod:`mailauth.dkim`); this module chooses the fields and keeps the keys.

Signed fields (:data:`SIGNED_FIELDS`): the originator and recipient fields, Subject, Date,
Message-ID, the threading fields, the MIME fields and List-Unsubscribe. Each is listed once per
occurrence plus once more ("oversigned"): a field added later, even one absent at signing
(a second From, a Cc), breaks the signature (RFC 6376 5.4.2, 8.15).

Keys: one RSA and one Ed25519 pair per domain, in ``<secrets_dir>/dkim/<domain>/<selector>.pem``
(PEM, mode 0600), generated on first use. Generation is race-free across processes
(:func:`mailcommon.secrets.load_or_create_file`: a private temporary file hard-linked into place);
the loser of a race reads the winner's key, so every process signs with the key published.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from mailcommon.addresses import normalize_domain
from mailcommon.secrets import load_or_create_file
from pydantic import model_validator
from pydantic_settings import BaseSettings

__all__ = [
    "DEFAULT_SELECTORS",
    "SIGNED_FIELDS",
    "DkimSigner",
    "Selectors",
    "SigningKey",
    "sign_message",
]

RSA_BITS = 2048
KEY_DIR = "dkim"
SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
SIGNED_FIELDS: tuple[bytes, ...] = (
    b"from",
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
Kind = Literal["rsa", "ed25519"]
_ALGORITHM: dict[Kind, bytes] = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}


class KeyFileError(ValueError):
    """A key file on the secrets volume is not a key of the kind its selector is for."""


@dataclass(frozen=True)
class Selectors:
    """The selector of each key (``DKIM_SELECTOR_RSA``, ``DKIM_SELECTOR_ED25519``)."""

    rsa: str = "md-rsa1"
    ed25519: str = "md-ed1"

    def __post_init__(self) -> None:
        for selector in (self.rsa, self.ed25519):
            if not SELECTOR.match(selector):
                raise ValueError(f"DKIM selector {selector!r} is not a lower-case DNS label")
        if self.rsa == self.ed25519:
            raise ValueError("the RSA and Ed25519 DKIM selectors must differ")


DEFAULT_SELECTORS = Selectors()


@dataclass(frozen=True)
class SigningKey:
    """One private key of a domain, with what dkimpy signs with and what DNS publishes."""

    domain: str  # A-labels, lower-case
    selector: str
    kind: Kind
    private: bytes  # dkimpy's form: PKCS#1 PEM for RSA, the base64 32-octet seed for ed25519
    public: str  # the base64 of p=
    # The RSA key loaded into OpenSSL once (see _OpenSslRsa); None for ed25519.
    rsa_key: rsa.RSAPrivateKey | None = field(default=None, compare=False, repr=False)

    @property
    def algorithm(self) -> bytes:
        return _ALGORITHM[self.kind]

    @property
    def record_name(self) -> str:
        """Where the public key is published (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record(self) -> str:
        """The TXT record's text (RFC 6376 3.6.1, RFC 8463 4.2)."""
        return f"v=DKIM1; k={self.kind}; p={self.public}"


def key_path(secrets_dir: Path, domain: str, selector: str) -> Path:
    return secrets_dir / KEY_DIR / domain / f"{selector}.pem"


def _new_pem(kind: Kind) -> bytes:
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        form = serialization.PrivateFormat.TraditionalOpenSSL  # PKCS#1: what dkimpy parses
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        form = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def _from_pem(pem: bytes, domain: str, selector: str, kind: Kind, path: Path) -> SigningKey:
    """The key in ``pem`` (a file's contents), which must be of ``kind``."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # not PEM, encrypted, unknown
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from exc
    no_encryption = serialization.NoEncryption()
    if kind == "rsa" and isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pkcs1 = serialization.PrivateFormat.TraditionalOpenSSL  # what dkimpy's parser takes
        private = key.private_bytes(serialization.Encoding.PEM, pkcs1, no_encryption)
        public_text = base64.b64encode(public).decode()
        return SigningKey(domain, selector, kind, private, public_text, rsa_key=key)
    if kind == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        raw = serialization.Encoding.Raw
        public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        seed = key.private_bytes(raw, serialization.PrivateFormat.Raw, no_encryption)
        public_text = base64.b64encode(public).decode()
        return SigningKey(domain, selector, kind, base64.b64encode(seed), public_text)
    raise KeyFileError(f"{path}: not an {kind} key (selector {selector})")


def load_or_create_key(secrets_dir: Path, domain: str, selector: str, kind: Kind) -> SigningKey:
    """The ``kind`` key of ``domain`` at ``selector``, generated onto the volume if absent."""
    path = key_path(secrets_dir, domain, selector)
    for directory in (secrets_dir / KEY_DIR, path.parent):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Generating costs an RSA key (50 ms): only when there is none yet.
    pem = path.read_bytes() if path.exists() else load_or_create_file(path, _new_pem(kind))
    return _from_pem(pem, domain, selector, kind, path)


def _signing_domain(domain: str) -> str:
    normal = normalize_domain(domain)
    if normal is None:
        raise ValueError(f"{domain!r} is not a domain name")
    return normal


def _with_crlf(message: bytes) -> bytes:
    """The message as it goes on the wire (CRLF line ends), which is what DKIM signs."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _field_list(message: bytes) -> list[bytes]:
    """Every signed field name as often as the header block has it, plus once."""
    block = message.split(b"\r\n\r\n", 1)[0]
    counts = dict.fromkeys(SIGNED_FIELDS, 1)
    for line in block.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):
            name = line.split(b":", 1)[0].strip().lower()
            if name in counts:
                counts[name] += 1
    return [name for name in SIGNED_FIELDS for _ in range(counts[name])]


@dataclass(frozen=True)
class _Signature:
    signature: bytes


class _RsaDigestSigner:
    """What dkimpy's ed25519 branch calls (``pk.sign(digest).signature``), here RSASSA-PKCS1-v1_5
    over the SHA-256 digest by OpenSSL: the very bytes dkimpy's own RSA code computes (PKCS#1
    v1.5 is deterministic; a test compares them)."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key

    def sign(self, digest: bytes) -> _Signature:
        prehashed = utils.Prehashed(hashes.SHA256())
        return _Signature(self.key.sign(digest, padding.PKCS1v15(), prehashed))


class _OpenSslRsa(dkim.DKIM):  # type: ignore[misc]  # dkimpy has no type hints
    """dkimpy's signer with the one RSA private-key operation done by OpenSSL.

    dkimpy computes RSA in Python integers: 20 ms for a 2048-bit signature here, against under a
    millisecond for OpenSSL (measured), which would cap signing at some 50 messages a second per
    core. Everything else stays dkimpy's: canonicalization, hashes, tags and folding. Its
    ``gen_header`` hands the header hash's digest to ``pk.sign`` on its ed25519 branch, so that
    branch is taken with :class:`_RsaDigestSigner` as ``pk`` (``a=`` and the hash were set from
    ``rsa-sha256`` by ``sign`` before). The tests verify the result with dkimpy and libopendkim,
    so a dkimpy that changed this would be caught."""

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey, linesep: bytes) -> None:
        super().__init__(message, signature_algorithm=b"rsa-sha256", linesep=linesep)
        self._digest_signer = _RsaDigestSigner(key)

    def gen_header(self, *args: Any, **kwargs: Any) -> bytes:
        fields, include_headers, canon_policy, header_name, _pk = args[:5]
        self.signature_algorithm = b"ed25519-sha256"
        try:
            header: bytes = super().gen_header(
                fields, include_headers, canon_policy, header_name, self._digest_signer, **kwargs
            )
        finally:
            self.signature_algorithm = b"rsa-sha256"
        return header


def _sign_one(wire: bytes, key: SigningKey, fields: list[bytes], linesep: bytes) -> bytes:
    options: dict[str, Any] = {
        "canonicalize": (b"relaxed", b"relaxed"),
        "include_headers": fields,
        "signature_algorithm": key.algorithm,
    }
    if key.rsa_key is not None:
        signer = _OpenSslRsa(wire, key.rsa_key, linesep)
    else:
        signer = dkim.DKIM(wire, signature_algorithm=key.algorithm, linesep=linesep)
    signature: bytes = signer.sign(
        key.selector.encode(), key.domain.encode(), key.private, **options
    )
    return signature


def sign_message(message: bytes, keys: Sequence[SigningKey], *, linesep: bytes = b"\r\n") -> bytes:
    """The DKIM-Signature fields for ``message``, one per key in order, each ending in
    ``linesep``: put them on top of the message, unchanged, before it is sent. ``message`` may
    have LF or CRLF line ends; it is signed as sent (CRLF). Raises ``ValueError`` when the
    message has no From field (RFC 6376 5.4) or dkimpy cannot parse its header."""
    wire = _with_crlf(message)
    fields = _field_list(wire)
    if fields.count(b"from") < 2:
        raise ValueError("the message has no From field to sign")
    out = []
    for key in keys:
        try:
            out.append(_sign_one(wire, key, fields, linesep))
        except dkim.DKIMException as exc:
            raise ValueError(f"cannot sign: {exc}") from exc
    return b"".join(out)


class DkimSigner:
    """Signs for any domain with its keys, generated on first use and then kept in memory.

    Safe to share between threads. Signing is CPU work (both signatures of a 4 KiB message:
    about 4 ms here, against 23 ms with dkimpy's own RSA, see :class:`_OpenSslRsa`): an async
    caller runs :meth:`sign` in an executor."""

    def __init__(self, secrets_dir: Path, selectors: Selectors = DEFAULT_SELECTORS) -> None:
        self.secrets_dir = secrets_dir
        self.selectors = selectors
        self._keys: dict[str, tuple[SigningKey, SigningKey]] = {}
        self._lock = threading.Lock()

    def keys(self, domain: str) -> tuple[SigningKey, SigningKey]:
        """The RSA and the Ed25519 key of ``domain`` (any spelling; a bad name: ValueError)."""
        name = _signing_domain(domain)
        found = self._keys.get(name)
        if found is None:
            with self._lock:  # one generation per process; other processes: the hard link
                found = self._keys.get(name)
                if found is None:
                    found = (
                        load_or_create_key(self.secrets_dir, name, self.selectors.rsa, "rsa"),
                        load_or_create_key(
                            self.secrets_dir, name, self.selectors.ed25519, "ed25519"
                        ),
                    )
                    self._keys[name] = found
        return found

    def sign(self, message: bytes, domain: str, *, linesep: bytes = b"\r\n") -> bytes:
        """The two DKIM-Signature fields (rsa-sha256, then ed25519-sha256) for ``message``
        signed as ``d=domain``, to put on top of it; see :func:`sign_message`."""
        return sign_message(message, self.keys(domain), linesep=linesep)


class DkimSettings(BaseSettings):
    """The DKIM selectors (mixed into the settings of every service that signs or shows the
    records: the mailstore, smtp-out). Changing one means a new key, generated on first use,
    and a new record to publish (keep the old one until mail signed with it is delivered)."""

    dkim_selector_rsa: str = "md-rsa1"
    dkim_selector_ed25519: str = "md-ed1"

    @model_validator(mode="after")
    def _check_selectors(self) -> Self:
        self.dkim_selectors()  # raises ValueError naming the bad one
        return self

    def dkim_selectors(self) -> Selectors:
        return Selectors(rsa=self.dkim_selector_rsa, ed25519=self.dkim_selector_ed25519)

    def dkim_signer(self, secrets_dir: Path) -> DkimSigner:
        return DkimSigner(secrets_dir, self.dkim_selectors())
