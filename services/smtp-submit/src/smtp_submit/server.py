"""The two listeners (587 STARTTLS, 465 implicit TLS) on the asyncio loop, and shutdown."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time

from mailcommon.client import MailstoreClient
from mailcommon.connections import ConnectionRegistry
from mailcommon.logging import get_logger

from smtp_submit.handler import SubmitHandler
from smtp_submit.limits import HourlyLimit
from smtp_submit.login import Logins
from smtp_submit.protocol import protocol_factory
from smtp_submit.settings import SubmitSettings

log = get_logger(__name__)
DRAIN_POLL = 0.05


class SubmitServer:
    """Listens on both ports, counts connections, and drains on SIGTERM."""

    def __init__(
        self,
        settings: SubmitSettings,
        mailstore: MailstoreClient,
        logins: Logins,
        hourly: HourlyLimit,
        tls_context: ssl.SSLContext,
    ) -> None:
        self.settings = settings
        self.handler = SubmitHandler(settings, mailstore, hourly)
        self.logins = logins
        self.tls_context = tls_context
        self.registry = ConnectionRegistry(
            settings.max_connections, settings.max_connections_per_ip
        )
        self._servers: list[asyncio.Server] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        st = self.settings
        for port, implicit in ((st.submit_bind_port, False), (st.submits_bind_port, True)):
            factory = protocol_factory(
                self.handler,
                settings=st,
                logins=self.logins,
                registry=self.registry,
                tls_context=self.tls_context,
                implicit_tls=implicit,
                loop=loop,
            )
            server = await loop.create_server(
                factory,
                host=st.submit_bind_host,
                port=port,
                reuse_address=True,
                backlog=1024,
                ssl=self.tls_context if implicit else None,
            )
            self._servers.append(server)
        log.info(
            "listening",
            starttls=f"{st.submit_bind_host}:{st.submit_bind_port}",
            implicit_tls=f"{st.submit_bind_host}:{st.submits_bind_port}",
            hostname=st.mail_hostname,
            max_recipients=st.submit_max_recipients,
            max_messages_per_hour=st.submit_max_messages_per_hour,
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT; then stop accepting and let deliveries finish."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.drain(self.settings.submit_shutdown_grace)

    async def drain(self, grace: float) -> None:
        """Stop accepting; close idle sessions (421); give transactions ``grace`` seconds, then
        close what is left and wait for the deliveries already under way."""
        self.registry.draining = True
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for conn in list(self.registry.members):
                if conn.is_idle():
                    conn.close_for_shutdown()
            # Idle ones are closed (a TLS close may wait for the client's close_notify: not us).
            busy = [conn for conn in self.registry.members if not conn.is_idle()]
            if not busy and not self.handler.shipper.tasks:
                break
            await asyncio.sleep(DRAIN_POLL)
        left = len(self.registry.members)
        for conn in list(self.registry.members):
            conn.abort()
        tasks = list(self.handler.shipper.tasks)
        if tasks:  # uploads under way finish or fail on the mailstore's timeout, not ours
            await asyncio.wait(tasks, timeout=self.settings.mailstore_timeout)
        await asyncio.sleep(0)  # let the closed transports call connection_lost
        log.info("stopped", aborted_connections=left, deliveries_waited=len(tasks))
