"""``python -m pop3d``: read the settings, check them, serve until SIGTERM.

A bad setting or an insecure token ends the process with a clear message and exit status 2.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from mailcommon.logging import configure_logging
from mailcommon.secrets import InsecureTokenError
from mailcommon.tls import ensure_certificate, server_context
from pydantic import ValidationError

from pop3d.context import Context
from pop3d.server import Pop3Server, build_context
from pop3d.settings import Pop3Settings

EXIT_CONFIG = 2


def _fail(message: str) -> int:
    print(f"pop3d: configuration error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]).upper() or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def load() -> Context | int:
    try:
        settings = Pop3Settings()
    except ValidationError as exc:
        return _fail(_describe(exc))
    try:
        token = settings.resolved_service_token()
    except InsecureTokenError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read or create the service token: {exc}")
    try:
        cert, key = ensure_certificate(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.secrets_dir,
            settings.mail_hostname,
        )
        tls = server_context(cert, key)
    except (OSError, ValueError, TimeoutError) as exc:
        return _fail(f"TLS certificate: {exc}")
    configure_logging("pop3", settings.log_level, settings.log_format)
    # One line per HTTP request to the mailstore would drown the session lines.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return build_context(settings, token, tls)


def main() -> int:
    loaded = load()
    if isinstance(loaded, int):
        return loaded
    server = Pop3Server(loaded)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:  # e.g. the port is taken
        print(f"pop3d: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(server: Pop3Server) -> None:
    await server.run()


if __name__ == "__main__":
    sys.exit(main())
