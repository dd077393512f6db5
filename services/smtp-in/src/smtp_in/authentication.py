"""Who sent the message: the mailauth checks run for one transaction.

SPF needs only the envelope, so it starts at MAIL FROM and runs while the client sends RCPT and
DATA; DKIM and ARC start when the message is complete; DMARC combines them with the From domain.
Every check answers with a verdict (``temperror`` for DNS trouble), never an exception.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from dataclasses import dataclass

from mailauth.arc import verify_arc
from mailauth.dkim import verify_dkim
from mailauth.dmarc import DmarcResult, check_dmarc
from mailauth.headers import header_from_domain
from mailauth.spf import check_spf
from mailauth.verdicts import ArcResult, DkimResult, SpfResult
from mailcommon.logging import get_logger

from smtp_in.settings import SmtpSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Verdicts:
    spf: SpfResult
    dkim: list[DkimResult]
    arc: ArcResult
    dmarc: DmarcResult

    @property
    def temperror(self) -> bool:
        """Some check could not be completed because DNS did not answer."""
        results = [self.spf.result, self.dmarc.result, *(d.result for d in self.dkim)]
        return "temperror" in results or self.arc.temporary

    def log_fields(self) -> dict[str, object]:
        return {
            "spf": self.spf.result,
            "dkim": [f"{d.result}:{d.domain}" for d in self.dkim] or "none",
            "arc": self.arc.result,
            "dmarc": self.dmarc.result,
            "dmarc_policy": self.dmarc.policy or None,
            "from_domain": self.dmarc.from_domain or None,
        }


class SenderChecks:
    """One per process: the resolver (and its cache) shared by every transaction's checks, and
    the pool of processes that verify signatures (``AUTH_WORKERS``; 0: threads of this one).

    Verifying a DKIM signature is about a millisecond of Python per RSA key; in worker threads it
    competes with the event loop for the GIL (smtp-in's CPU per message: see bench/RESULTS.md,
    "Sender checks"), in worker processes it runs beside it.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.resolver = settings.resolver()
        self._verifiers = self._pool()

    def _pool(self) -> ProcessPoolExecutor | None:
        if not self.settings.auth_workers:
            return None
        # forkserver: workers are not forks of this multi-threaded process; they start with the
        # verifiers imported.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mailauth.dkim", "mailauth.arc"])
        return ProcessPoolExecutor(self.settings.auth_workers, mp_context=context)

    def close(self) -> None:
        if self._verifiers is not None:
            self._verifiers.shutdown(wait=False, cancel_futures=True)

    def start_spf(self, *, ip: str, mail_from: str, helo: str) -> asyncio.Task[SpfResult]:
        """SPF for this MAIL FROM (or HELO for the null sender), running in the background."""
        return asyncio.ensure_future(
            check_spf(self.resolver, ip=ip, mail_from=mail_from, helo=helo)
        )

    async def _signatures(self, message: bytes) -> tuple[list[DkimResult], ArcResult]:
        pool = self._verifiers
        return await asyncio.gather(
            verify_dkim(
                self.resolver,
                message,
                max_signatures=self.settings.dkim_max_signatures,
                executor=pool,
            ),
            verify_arc(self.resolver, message, executor=pool),
        )

    async def verdicts(self, spf: asyncio.Task[SpfResult], message: bytes) -> Verdicts:
        """Every verdict for ``message`` (as received, before our headers are added)."""
        try:
            dkim, arc = await self._signatures(message)
        except BrokenExecutor:
            # A worker died (killed, out of memory): a new pool, and one more try on it.
            log.error("verifier_pool_broken", workers=self.settings.auth_workers)
            self._verifiers = self._pool()
            dkim, arc = await self._signatures(message)
        spf_result = await spf
        dmarc = await check_dmarc(
            self.resolver,
            from_domain=header_from_domain(message),
            spf=spf_result,
            dkim=dkim,
        )
        return Verdicts(spf_result, dkim, arc, dmarc)
