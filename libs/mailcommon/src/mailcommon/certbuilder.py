"""X.509 certificates and PEM keys with ``cryptography``: the generated self-signed pair
(:mod:`mailcommon.tls`), the ACME key, and the test CA of ``mailstack.certs``.

Import this module only where a certificate or key is made: loaded, ``cryptography``'s Rust
extension keeps about 9 MiB resident (see :func:`mailcommon.tls._self_signed`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def pem_private_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_certificate(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def build_certificate(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    *,
    names: Sequence[x509.GeneralName] = (),
    ca: bool = False,
    server_auth: bool = False,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    """A certificate of ``key``'s public key for ``common_name``, signed by ``issuer`` (its
    certificate and key), or by ``key`` itself when there is none. ``names``: the
    subjectAltName (none when empty); ``ca``: basicConstraints CA (critical); ``server_auth``: the
    serverAuth extended key usage."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    if server_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())
