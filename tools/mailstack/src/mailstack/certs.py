"""Certificates for tests: a throwaway CA and the pairs it signs, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from mailcommon.certbuilder import build_certificate, new_key, pem_certificate, pem_private_key


@dataclass(frozen=True)
class ScratchCA:
    """A self-signed CA whose :meth:`issue` signs server certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "maildrop test CA") -> ScratchCA:
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        cert = build_certificate(
            key, name, now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30), ca=True
        )
        return cls(key, cert)

    @property
    def pem(self) -> bytes:
        return pem_certificate(self.cert)

    def issue(
        self,
        hostname: str,
        *,
        valid_from: datetime.timedelta = datetime.timedelta(hours=-1),
        valid_for: datetime.timedelta = datetime.timedelta(days=7),
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for ``hostname``, valid from ``now + valid_from`` for
        ``valid_for`` (a negative ``valid_from`` larger than ``valid_for``: already expired)."""
        key = new_key()
        start = datetime.datetime.now(datetime.UTC) + valid_from
        names: list[x509.GeneralName] = [x509.DNSName(hostname)]
        if hostname == "localhost":
            names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = build_certificate(
            key,
            hostname,
            start,
            start + valid_for,
            names=names,
            server_auth=True,
            issuer=(self.cert, self.key),
        )
        return pem_certificate(cert), pem_private_key(key)

    def write(
        self, directory: Path, hostname: str, **validity: datetime.timedelta
    ) -> tuple[Path, Path]:
        """:meth:`issue` written to ``directory/cert.pem`` and ``directory/key.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.issue(hostname, **validity)
        (directory / "cert.pem").write_bytes(cert)
        (directory / "key.pem").write_bytes(key)
        return directory / "cert.pem", directory / "key.pem"
