"""The two listeners (587 STARTTLS, 465 implicit TLS) on the asyncio loop, and shutdown."""

from __future__ import annotations

import asyncio
import signal
import ssl

from mailcommon.client import MailstoreClient
from mailcommon.logging import get_logger

from smtp_submit.handler import SubmitHandler
from smtp_submit.limits import HourlyLimit
from smtp_submit.login import Logins
from smtp_submit.protocol import protocol_factory
from smtp_submit.settings import SubmitSettings

log = get_logger(__name__)


class SubmitServer:
    """Listens on both ports; on SIGTERM stops accepting and waits for deliveries in flight."""

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
        for server in self._servers:
            server.close()
        tasks = list(self.handler.shipper.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.mailstore_timeout)
        log.info("stopped", deliveries_waited=len(tasks))
