"""``python -m smtp_in``: read the settings, then serve SMTP until SIGTERM.

Bad settings (an insecure token, a missing domain list, an unreadable certificate) end the process
with exit status 2 and one line saying why, before anything listens.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys

from mailcommon.client import MailstoreClient
from mailcommon.logging import configure_logging, get_logger
from mailcommon.secrets import InsecureTokenError
from mailcommon.tls import ensure_certificate, server_context
from mailcommon.transport import LeanTransport
from pydantic import ValidationError

from smtp_in.memory import pin_mmap_threshold
from smtp_in.server import SmtpServer
from smtp_in.settings import SmtpSettings

EXIT_CONFIG = 2
EXIT_BIND = 1


class ConfigError(Exception):
    """The environment does not describe a server we can run."""


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]).upper() or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def load() -> tuple[SmtpSettings, str, ssl.SSLContext]:
    """Settings, the service token and the STARTTLS context, or ConfigError saying what is wrong."""
    try:
        settings = SmtpSettings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    try:
        token = settings.resolved_service_token()
    except (InsecureTokenError, OSError) as exc:
        raise ConfigError(str(exc)) from exc
    try:
        cert, key = ensure_certificate(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.secrets_dir,
            settings.mail_hostname,
        )
        context = server_context(cert, key)
    except (ValueError, OSError, ssl.SSLError, TimeoutError) as exc:
        raise ConfigError(f"TLS certificate: {exc}") from exc
    return settings, token, context


async def run(settings: SmtpSettings, token: str, context: ssl.SSLContext) -> None:
    mailstore = MailstoreClient(
        settings.mailstore_url,
        token,
        timeout=settings.mailstore_timeout,
        max_connections=settings.smtp_mailstore_connections,
        transport=LeanTransport(settings.smtp_mailstore_connections),
    )
    server = SmtpServer(settings, mailstore, context)
    try:
        await server.start()
        await server.serve_until_stopped()
    finally:
        await mailstore.aclose()


def main() -> None:
    try:
        settings, token, context = load()
    except ConfigError as exc:
        print(f"smtp-in: refusing to start: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    configure_logging("smtp-in", settings.log_level, settings.log_format)
    pin_mmap_threshold()
    # aiosmtpd logs every command at INFO; our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # httpx logs every request to the mailstore at INFO; the message line covers it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(run(settings, token, context))
    except OSError as exc:  # the listening address is taken or not ours
        get_logger(__name__).error("cannot_listen", error=str(exc))
        print(f"smtp-in: cannot listen: {exc}", file=sys.stderr)
        sys.exit(EXIT_BIND)


if __name__ == "__main__":
    main()
