"""Which domain signs a message that leaves (``d=``), and the signature fields.

The ``From:`` domain signs (so DMARC aligns) when it is one of ours: a domain the mailstore
hosts, asked once a minute per domain (``GET /internal/v1/recipients/postmaster@<domain>``:
postmaster@ resolves in every hosted domain; ``unknown_domain`` means not ours). A message whose
``From:`` is elsewhere (later: forwarded mail) leaves unsigned, since a signature by a domain
that is not the author's proves nothing a receiver acts on. The signer
(:class:`mailauth.signing.DkimSigner`) makes the domain's keys on first use; signing is CPU work
(about 4 ms), done in a worker thread.
"""

from __future__ import annotations

import asyncio
import time

from mailauth.headers import header_from_domain
from mailauth.signing import DkimSigner
from mailcommon.client import MailstoreClient, MailstoreUnavailable, NotFound
from mailcommon.logging import get_logger

log = get_logger(__name__)
CACHE_SECONDS = 60.0


class Signing:
    """The DKIM fields to put on top of an outgoing message, or none."""

    def __init__(self, signer: DkimSigner, mailstore: MailstoreClient) -> None:
        self.signer = signer
        self.mailstore = mailstore
        self._ours: dict[str, tuple[bool, float]] = {}

    async def is_ours(self, domain: str) -> bool:
        """Whether the mailstore hosts ``domain`` (MailstoreUnavailable when it cannot say)."""
        cached = self._ours.get(domain)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            await self.mailstore.recipient(f"postmaster@{domain}")
            ours = True
        except NotFound as exc:
            ours = exc.code != "unknown_domain"
        except MailstoreUnavailable as exc:
            if exc.code != "no_postmaster":  # hosted, with no postmaster account yet
                raise
            ours = True
        self._ours[domain] = (ours, now + CACHE_SECONDS)
        return ours

    async def domain_of(self, message: bytes) -> str | None:
        """The ``From:`` domain that signs ``message``, or None (unsigned)."""
        domain = header_from_domain(message)  # one From, one address (DMARC's rule)
        if domain is None or not await self.is_ours(domain):
            return None
        return domain

    async def fields(self, message: bytes, entry: str) -> bytes:
        """The DKIM-Signature fields for ``message`` (b'' when it goes unsigned)."""
        domain = await self.domain_of(message)
        if domain is None:
            return b""
        try:
            return await asyncio.to_thread(self.signer.sign, message, domain)
        except ValueError as exc:  # no From dkimpy can sign, a header it cannot parse
            log.warning("unsigned", entry=entry, domain=domain, error=str(exc))
            return b""
