"""The listening server on the asyncio loop, and its graceful shutdown.

No aiosmtpd ``Controller`` (a thread of its own): ``loop.create_server`` with our protocol factory,
so SIGTERM can stop accepting, let the transactions in flight finish, and exit.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time

from mailcommon.client import MailstoreClient
from mailcommon.connections import ConnectionRegistry
from mailcommon.logging import get_logger

from smtp_in import metrics
from smtp_in.authentication import SenderChecks
from smtp_in.handler import MailHandler
from smtp_in.limits import DataBudget
from smtp_in.protocol import protocol_factory
from smtp_in.rspamd import Rspamd
from smtp_in.settings import SmtpSettings

log = get_logger(__name__)
DRAIN_POLL = 0.05


class SmtpServer:
    """Listens, counts connections, and drains on request."""

    def __init__(
        self,
        settings: SmtpSettings,
        mailstore: MailstoreClient,
        tls_context: ssl.SSLContext | None,
        checks: SenderChecks | None = None,
        rspamd: Rspamd | None = None,
    ) -> None:
        self.settings = settings
        self.mailstore = mailstore
        self.handler = MailHandler(settings, mailstore, checks, rspamd)
        self.registry = ConnectionRegistry(
            settings.max_connections, settings.max_connections_per_ip
        )
        metrics.count_connections(self.registry.count)
        self.budget = DataBudget(settings.smtp_data_memory_budget)
        self.tls_context = tls_context
        self._server: asyncio.Server | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        factory = protocol_factory(
            self.handler,
            settings=self.settings,
            registry=self.registry,
            budget=self.budget,
            tls_context=self.tls_context,
            loop=loop,
        )
        self._server = await loop.create_server(
            factory,
            host=self.settings.smtp_bind_host,
            port=self.settings.smtp_bind_port,
            reuse_address=True,
            backlog=1024,
        )
        addresses = [sock.getsockname() for sock in self._server.sockets]
        log.info(
            "listening",
            addresses=[f"{a[0]}:{a[1]}" for a in addresses],
            domains=self.settings.mail_domains,
            hostname=self.settings.mail_hostname,
            max_message_size=self.settings.max_message_size,
            max_connections=self.settings.max_connections,
            max_connections_per_ip=self.settings.max_connections_per_ip,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT, then drain and return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.drain(self.settings.smtp_shutdown_grace)

    async def drain(self, grace: float) -> None:
        """Stop accepting; close idle sessions; give transactions ``grace`` seconds to finish."""
        started = time.monotonic()
        self.registry.draining = True
        if self._server is not None:
            self._server.close()
        log.info("draining", connections=self.registry.count(), grace_s=grace)
        deadline = started + grace
        while time.monotonic() < deadline:
            for conn in list(self.registry.members):
                if conn.is_idle():
                    conn.close_for_shutdown()
            if not self.registry.members and not self.handler.deliveries:
                break
            await asyncio.sleep(DRAIN_POLL)
        left = len(self.registry.members)
        for conn in list(self.registry.members):
            conn.abort()
        if self.handler.deliveries:
            # Uploads already under way finish or fail on the mailstore's timeout, not ours.
            await asyncio.wait(
                list(self.handler.deliveries), timeout=self.settings.mailstore_timeout
            )
        await asyncio.sleep(0)  # let the closed transports call connection_lost
        log.info(
            "stopped",
            aborted_connections=left,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
