"""The queue worker: claim entries under a lease, send each one's recipients domain by domain,
report every domain's results as soon as it is done.

Crash safety (the lease does it; see docs/architecture.md, "Outbound queue"): smtp-out keeps no
state. An entry is claimed with a lease of ``SMTP_OUT_LEASE_SECONDS``; results are reported per
domain under that lease (``release`` only with the last), so a crash loses at most the results
not yet reported: those recipients are still pending, and once the lease runs out the next claim
(by this worker restarted, or another) sends to them again. Nothing is lost, since an entry
leaves the queue only when every recipient is settled by a report; nothing is sent twice except
what a receiver accepted (its 250) before the crash and was not reported yet, which SMTP allows
for a lost 250 (RFC 5321 6.1). A worker that lost its lease (stalled past it) gets 409
``stale_lease`` at its report and drops the entry: the newer holder's results stand.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict

from mailcommon.addresses import normalize_domain
from mailcommon.client import (
    LockConflict,
    MailstoreClient,
    MailstoreError,
    MailstoreUnavailable,
    NotFound,
    QueueClaim,
    RecipientResult,
)
from mailcommon.logging import get_logger

from smtp_out import metrics
from smtp_out.dkim import Signing
from smtp_out.domains import Route, deliver_domain
from smtp_out.results import Result
from smtp_out.settings import OutSettings
from smtp_out.transfer import Envelope

log = get_logger(__name__)
REPORT_TRIES = 5


def worker_name() -> str:
    """Who claims, for the mailstore's logs and its queue listing."""
    return f"smtp-out@{socket.gethostname()}:{os.getpid()}"


def by_domain(recipients: list[str]) -> dict[str, list[str]]:
    """Recipients grouped by domain (A-labels, lower case), in the order first seen."""
    groups: dict[str, list[str]] = defaultdict(list)
    for address in recipients:
        domain = address.rpartition("@")[2]
        groups[normalize_domain(domain) or domain.lower()].append(address)
    return dict(groups)


class Worker:
    """Claims and works entries, at most ``SMTP_OUT_CONCURRENCY`` at once."""

    def __init__(
        self,
        settings: OutSettings,
        mailstore: MailstoreClient,
        route: Route,
        signing: Signing,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.mailstore = mailstore
        self.route = route
        self.signing = signing
        self.name = name or worker_name()
        self.active: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and work until ``stop`` is set; then let the entries under way finish."""
        concurrency = self.settings.smtp_out_concurrency
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                free = concurrency - len(self.active)
                if free <= 0:
                    await asyncio.wait(
                        {stopping, *self.active}, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                try:
                    claims = await self.mailstore.claim(
                        self.name, limit=free, lease_seconds=self.settings.smtp_out_lease_seconds
                    )
                except MailstoreError as exc:
                    log.warning("claim_failed", error=str(exc))
                    claims = []
                for claim in claims:
                    task = asyncio.create_task(self.work(claim))
                    self.active.add(task)
                    task.add_done_callback(self.active.discard)
                if len(claims) < free:  # nothing more is due now: wait for the next poll
                    await asyncio.wait({stopping}, timeout=self.settings.smtp_out_poll_interval)
        finally:
            stopping.cancel()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the entries under way, then cancel the rest (their
        leases run out and they are claimed again)."""
        if self.active:
            _, late = await asyncio.wait(set(self.active), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def work(self, claim: QueueClaim) -> None:
        """Send ``claim``'s pending recipients and report them; never raises."""
        started = time.monotonic()
        try:
            await self._work(claim)
        except asyncio.CancelledError:
            log.warning("entry_abandoned", entry=claim.id)
            raise
        except Exception as exc:  # a bug: the lease runs out and the entry is claimed again
            log.error("entry_failed", entry=claim.id, error=f"{type(exc).__name__}: {exc}",
                      exc_info=exc)  # fmt: skip
        finally:
            metrics.ENTRY_SECONDS.observe(time.monotonic() - started)

    async def _work(self, claim: QueueClaim) -> None:
        try:
            message = await self._read(claim.id)
            signature = await self.signing.fields(message, claim.id)
        except NotFound:
            log.info("entry_gone", entry=claim.id)
            return
        except MailstoreUnavailable as exc:  # retried once the lease runs out
            log.warning("mailstore_error", entry=claim.id, during="read", error=str(exc))
            return
        groups = by_domain([r.address for r in claim.recipients])
        for number, (domain, recipients) in enumerate(groups.items(), start=1):
            envelope = Envelope(claim.sender, recipients, signature + message)
            results = await deliver_domain(self.route, domain, envelope, claim.id)
            last = number == len(groups)
            if not await self._report(claim, results, release=last):
                return
        log.info(
            "entry_done",
            entry=claim.id,
            recipients=len(claim.recipients),
            domains=len(groups),
            signed=bool(signature),
            attempt=claim.attempts,
        )

    async def _read(self, entry_id: str) -> bytes:
        parts: list[bytes] = []
        async with self.mailstore.open_queued(entry_id) as stream:
            async for chunk in stream.aiter_raw():
                parts.append(chunk)
        return b"".join(parts)

    async def _report(
        self, claim: QueueClaim, results: dict[str, Result], *, release: bool
    ) -> bool:
        """Report ``results`` under the claim's lease; False when the entry is no longer ours
        (gone, or another lease) or the mailstore could not be told (then the lease runs out
        and the unreported recipients are sent again: the one way a duplicate arises)."""
        sent = [RecipientResult(r, res.status, res.reply) for r, res in results.items()]
        for res in results.values():
            metrics.RESULTS.labels(res.status).inc()
        for attempt in range(REPORT_TRIES):
            try:
                await self.mailstore.report(claim.id, claim.lease, sent, release=release)
                return True
            except LockConflict as exc:
                log.warning("stale_lease", entry=claim.id, error=str(exc))
                return False
            except NotFound:
                log.info("entry_gone", entry=claim.id)
                return False
            except MailstoreUnavailable as exc:
                log.warning("report_failed", entry=claim.id, attempt=attempt + 1, error=str(exc))
                if time.time() + 2**attempt >= claim.lease_expires:
                    break
                await asyncio.sleep(2**attempt)  # back-off while the mailstore recovers
            except MailstoreError as exc:  # refused (422): a bug here, not worth repeating
                log.error("report_refused", entry=claim.id, error=str(exc))
                return False
        log.error("report_lost", entry=claim.id, recipients=list(results))
        return False
