"""A server TLS context whose certificate can change under a running server.

Every listener (smtp-in's STARTTLS, pop3's STLS and its implicit-TLS port) is given ONE context,
:attr:`ReloadingContext.context`, for its whole life. Its ``sni_callback``, which OpenSSL calls on
every ClientHello (with or without SNI), moves each new handshake onto the context of the newest
good pair (``SSLObject.context = ...``, the documented way to choose a certificate per handshake).
A session already established keeps the SSL object it has, and with it the certificate it saw, so
nothing in progress is dropped. A new pair is loaded into a NEW context rather than into the live
one: ``load_cert_chain`` on the live context would keep an ECDSA pair beside a new RSA one (OpenSSL
has a slot per key type), and a failure half-way would leave it with a certificate and no key.

A pair is checked before it serves, and refused with a log line (the old one keeps serving) when
it is unreadable, its key does not match, or it is expired or not yet valid: the files are read
once, copied into one private temporary file (what is checked is what is loaded, even if the files
change meanwhile), loaded with ``load_cert_chain``, and then a TLS handshake is made in memory
between the new context and a client that takes the leaf as its only trust anchor
(``VERIFY_X509_PARTIAL_CHAIN``): OpenSSL then checks the validity dates, and the client's view
of the leaf gives ``notAfter``. Why not ``cryptography`` to read the dates: loaded, it keeps about
9 MiB resident in every front end (``bench/RESULTS.md``, "pop3 memory at start").

Changes are found by reading the files every ``interval`` seconds (their SHA-256, so a rename, a
symlink swap or a rewrite in place all count) and on SIGHUP. A pair refused once is not logged
again until its files change (certbot writing the certificate and then the key shows as one
refusal, then the good pair). The checks run on the event loop: per interval, two small files read
and hashed; a changed pair costs a few milliseconds (load and handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailcommon.logging import get_logger
from mailcommon.tls import server_context

log = get_logger(__name__)

# The certificate and the key to serve, resolved again at every check (a key of None: the
# certificate file holds the key too).
PairSource = Callable[[], tuple[Path, Path | None]]
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class CertificateRefused(Exception):
    """A certificate and key that must not serve; the message says why."""

    def __init__(self, message: str, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest  # of the files refused, when they could be read


@dataclass(frozen=True)
class LoadedPair:
    """A checked pair, ready to serve."""

    context: ssl.SSLContext
    digest: str
    not_after: float  # seconds since the epoch
    cert_file: Path


def _read_pair(cert_file: Path, key_file: Path | None) -> tuple[bytes, str]:
    """The pair as one PEM blob, and its digest."""
    try:
        cert = cert_file.read_bytes()
        key = key_file.read_bytes() if key_file is not None else b""
    except OSError as exc:
        raise CertificateRefused(f"unreadable: {exc}") from None
    blob = cert.rstrip(b"\n") + b"\n" + key
    return blob, hashlib.sha256(blob).hexdigest()


def _handshake_check(server: ssl.SSLContext, leaf_pem: str) -> float:
    """Handshake in memory with a client that trusts only the leaf; its ``notAfter``."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    client.load_verify_locations(cadata=leaf_pem)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(to_client, to_server, server_side=False)
    tls_server = server.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):  # a TLS 1.3 handshake takes two rounds; 1.2 three
        done = True
        for end in (tls_client, tls_server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                done = False
        if done:
            break
    peer = tls_client.getpeercert()
    if not peer:
        raise CertificateRefused("the handshake with the new pair did not complete")
    return ssl.cert_time_to_seconds(str(peer["notAfter"]))


def load_pair(cert_file: Path, key_file: Path | None) -> LoadedPair:
    """A new server context for the pair, checked as the module says; CertificateRefused."""
    blob, digest = _read_pair(cert_file, key_file)
    leaf = _PEM_CERTIFICATE.search(blob)
    if leaf is None:
        raise CertificateRefused("no PEM certificate in the file (half-written?)", digest)
    fd, name = tempfile.mkstemp(prefix="maildrop-pair-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(blob)
        context = server_context(Path(name), None)
        not_after = _handshake_check(context, leaf.group().decode("ascii", "replace"))
    except ssl.SSLCertVerificationError as exc:
        raise CertificateRefused(exc.verify_message or str(exc), digest) from None
    except (ssl.SSLError, ValueError) as exc:
        raise CertificateRefused(f"not a usable certificate and key: {exc}", digest) from None
    finally:
        os.unlink(name)
    return LoadedPair(context, digest, not_after, cert_file)


class ReloadingContext:
    """The one context the listeners get, serving the newest good pair from ``source``."""

    def __init__(
        self, source: PairSource, interval: float = 30.0, fallback: PairSource | None = None
    ) -> None:
        """A bad pair at start raises CertificateRefused, unless ``fallback`` gives one to serve
        until ``source`` has a good one (the ACME certificate, expired after failed renewals)."""
        self.source = source
        self.interval = interval
        # What the last refusal was about (a digest, or why the files could not be read).
        self._refused: str | None = None
        self._start_refusal: str | None = None
        try:
            self._current = load_pair(*source())
        except CertificateRefused as exc:
            if fallback is None:
                raise
            self._current = load_pair(*fallback())
            self._refused, self._start_refusal = exc.digest or str(exc), str(exc)
        self._wake = asyncio.Event()
        self.context = self._current.context
        self.context.sni_callback = self._choose

    @property
    def not_after(self) -> float:
        """When the certificate new handshakes get expires (seconds since the epoch)."""
        return self._current.not_after

    @property
    def digest(self) -> str:
        """SHA-256 of the pair serving now (certificate and key files as read)."""
        return self._current.digest

    def _choose(self, tls: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        tls.context = self._current.context

    def check(self, reason: str) -> bool:
        """Load the pair again if its files changed; True when a new pair now serves."""
        try:
            cert_file, key_file = self.source()
            digest = _read_pair(cert_file, key_file)[1]
            if digest in (self._current.digest, self._refused):
                return False
            pair = load_pair(cert_file, key_file)
        except (CertificateRefused, OSError, ValueError, TimeoutError) as exc:
            seen = exc.digest if isinstance(exc, CertificateRefused) and exc.digest else str(exc)
            if seen != self._refused:
                self._refused = seen
                log.warning(
                    "tls_certificate_refused",
                    reason=reason,
                    error=str(exc),
                    keeps_serving=str(self._current.cert_file),
                    serving_not_after=int(self._current.not_after),
                )
            return False
        self._current, self._refused = pair, None
        log.info(
            "tls_certificate_loaded",
            reason=reason,
            cert_file=str(pair.cert_file),
            not_after=int(pair.not_after),
        )
        return True

    def reload_now(self) -> None:
        """Check at once (SIGHUP)."""
        self._wake.set()

    async def watch(self) -> None:
        """Check every ``interval`` seconds and whenever :meth:`reload_now` is called; forever."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, self.reload_now)
        if self._start_refusal is not None:
            log.warning(
                "tls_certificate_refused",
                reason="start",
                error=self._start_refusal,
                keeps_serving=str(self._current.cert_file),
                serving_not_after=int(self._current.not_after),
            )
        while True:
            reason = "poll"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
                reason = "sighup"
            self._wake.clear()
            self.check(reason)
