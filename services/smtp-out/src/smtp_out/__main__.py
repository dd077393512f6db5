"""``python -m smtp_out``: read the settings, then work the outbound queue until SIGTERM.

Bad settings (an insecure token, a bad MAIL_HOSTNAME or DNS_NAMESERVERS) end the process with
exit status 2 and one line saying why, before anything is claimed.
"""

from __future__ import annotations

import asyncio
import signal

import uvloop
from mailcommon.client import MailstoreClient
from mailcommon.logging import configure_logging, get_logger
from mailcommon.metrics import exposed
from mailcommon.startup import ConfigError, load_settings, refuse, service_token

from smtp_out.dkim import Signing
from smtp_out.domains import Route
from smtp_out.settings import OutSettings
from smtp_out.transfer import opportunistic_context
from smtp_out.worker import Worker

log = get_logger(__name__)


async def run(settings: OutSettings, token: str) -> None:
    mailstore = MailstoreClient(
        settings.mailstore_url,
        token,
        timeout=settings.mailstore_timeout,
        max_connections=settings.smtp_out_mailstore_connections,
    )
    route = Route(
        resolver=settings.resolver(),
        port=settings.smtp_out_remote_port,
        helo=settings.mail_hostname,
        connect_timeout=settings.smtp_out_connect_timeout,
        command_timeout=settings.smtp_out_command_timeout,
        max_mx=settings.smtp_out_max_mx,
        tls=opportunistic_context(),
    )
    signing = Signing(settings.dkim_signer(settings.secrets_dir), mailstore)
    worker = Worker(settings, mailstore, route, signing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with exposed(settings, "smtp-out"):
            log.info(
                "started",
                worker=worker.name,
                concurrency=settings.smtp_out_concurrency,
                remote_port=settings.smtp_out_remote_port,
            )
            await worker.run(stop)
            log.info("stopping", under_way=len(worker.active))
            await worker.drain(settings.smtp_out_shutdown_grace)
    finally:
        await mailstore.aclose()


def main() -> None:
    try:
        settings = load_settings(OutSettings)
        token = service_token(settings)
    except ConfigError as exc:
        refuse("smtp-out", exc)
    configure_logging("smtp-out", settings.log_level, settings.log_format)
    loop_factory = uvloop.new_event_loop if settings.smtp_out_uvloop else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run(settings, token))


if __name__ == "__main__":
    main()
