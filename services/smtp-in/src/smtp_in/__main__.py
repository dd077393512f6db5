"""``python -m smtp_in``: read the settings, then serve SMTP until SIGTERM.

Bad settings (an insecure token, a missing domain list, an unreadable certificate) end the process
with exit status 2 and one line saying why, before anything listens.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvloop
from mailcommon.certwatch import ReloadingContext
from mailcommon.client import MailstoreClient
from mailcommon.logging import configure_logging, get_logger
from mailcommon.memory import pin_mmap_threshold
from mailcommon.metrics import exposed, watch_certificate
from mailcommon.startup import ConfigError, front_end_secrets, load_settings, refuse

from smtp_in.authentication import SenderChecks
from smtp_in.rspamd import Rspamd
from smtp_in.server import SmtpServer
from smtp_in.settings import SmtpSettings

EXIT_BIND = 1


async def run(settings: SmtpSettings, token: str, tls: ReloadingContext) -> None:
    mailstore = MailstoreClient(
        settings.mailstore_url,
        token,
        timeout=settings.mailstore_timeout,
        max_connections=settings.smtp_mailstore_connections,
    )
    checks = SenderChecks(settings) if settings.auth_checks else None
    rspamd = Rspamd.from_settings(settings)
    server = SmtpServer(settings, mailstore, tls.context, checks, rspamd)
    watcher = asyncio.create_task(tls.watch())  # a new certificate: see mailcommon.certwatch
    watch_certificate(lambda: tls.not_after)
    try:
        await server.start()
        async with exposed(settings, "smtp-in"):
            await server.serve_until_stopped()
    finally:
        watcher.cancel()
        await mailstore.aclose()
        if rspamd is not None:
            await rspamd.aclose()
        if checks is not None:
            checks.close()


def main() -> None:
    try:
        settings = load_settings(SmtpSettings)
        token, tls = front_end_secrets(settings)
    except ConfigError as exc:
        refuse("smtp-in", exc)
    configure_logging("smtp-in", settings.log_level, settings.log_format)
    pin_mmap_threshold()
    # aiosmtpd logs every command at INFO; our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop_factory = uvloop.new_event_loop if settings.smtp_uvloop else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run(settings, token, tls))
    except OSError as exc:  # the listening address is taken or not ours
        get_logger(__name__).error("cannot_listen", error=str(exc))
        print(f"smtp-in: cannot listen: {exc}", file=sys.stderr)
        sys.exit(EXIT_BIND)


if __name__ == "__main__":
    main()
