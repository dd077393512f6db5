"""Server TLS contexts: the operator's certificate, the ACME one, or a self-signed pair.

The generated pair lives in ``<secrets_dir>/tls/`` and is created race-free, so several front-end
replicas starting at once share one certificate. The certificate the mailstore's ACME client
obtains is :data:`ACME_FILE` there (chain and key in one file, replaced by one ``rename``, so a
reader never sees a new certificate with an old key); :func:`serving_pair` says which to serve.
"""

from __future__ import annotations

import datetime
import ssl
import time
from pathlib import Path

from mailcommon.secrets import load_or_create_file

GENERATED_VALIDITY = datetime.timedelta(days=3650)
ACME_FILE = Path("tls") / "acme.pem"  # under the secrets directory


def _self_signed(hostname: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key and a self-signed certificate for ``hostname`` (PEM).

    ``cryptography`` is imported here, only by the process that generates the pair: loaded, its
    Rust extension keeps about 9 MiB resident in every front end for good (pop3: 70 → 60 MiB at
    start, ``bench/RESULTS.md`` "pop3 memory at start").
    """
    from cryptography import x509  # noqa: PLC0415 (see the docstring)

    from mailcommon import certbuilder  # noqa: PLC0415 (see the docstring)

    key = certbuilder.new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = certbuilder.build_certificate(
        key,
        hostname,
        now - datetime.timedelta(minutes=5),
        now + GENERATED_VALIDITY,
        names=[x509.DNSName(hostname)],
        ca=True,
    )
    return certbuilder.pem_certificate(cert), certbuilder.pem_private_key(key)


def ensure_certificate(
    cert_file: Path | None, key_file: Path | None, secrets_dir: Path, hostname: str
) -> tuple[Path, Path]:
    """Paths of the certificate and key to serve: the configured ones, else the generated pair."""
    if cert_file and key_file:
        return cert_file, key_file
    if cert_file or key_file:
        raise ValueError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
    tls_dir = secrets_dir / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = _self_signed(hostname)
        # The key first: a reader that sees the certificate can rely on the key being there.
        load_or_create_file(key_path, key_pem)
        if not cert_path.exists():
            # Only the process whose key won may write the certificate that matches it.
            if key_path.read_bytes() == key_pem:
                load_or_create_file(cert_path, cert_pem)
            else:
                _wait_for(cert_path)
    return cert_path, key_path


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def serving_pair(
    cert_file: Path | None, key_file: Path | None, secrets_dir: Path, hostname: str, acme: bool
) -> tuple[Path, Path | None]:
    """What to serve now: the operator's pair; else, with ACME on, its certificate once there is
    one; else the generated pair (a key of None: the certificate file holds the key)."""
    if acme and not (cert_file or key_file) and (secrets_dir / ACME_FILE).exists():
        return secrets_dir / ACME_FILE, None
    return ensure_certificate(cert_file, key_file, secrets_dir, hostname)


def server_context(cert_file: Path, key_file: Path | None) -> ssl.SSLContext:
    """A TLS server context with modern defaults (TLS 1.2 or newer)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
