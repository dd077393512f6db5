"""``python -m pop3d``: read the settings, check them, serve until SIGTERM.

A bad setting or an insecure token ends the process with one line saying why and exit status 2.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvloop
from mailcommon.certwatch import ReloadingContext
from mailcommon.logging import configure_logging
from mailcommon.metrics import exposed, watch_certificate
from mailcommon.startup import ConfigError, front_end_secrets, load_settings, refuse

from pop3d.context import Context
from pop3d.server import Pop3Server, build_context
from pop3d.settings import Pop3Settings


def load() -> tuple[Context, ReloadingContext]:
    """The server's context from the environment, or ConfigError saying what is wrong."""
    settings = load_settings(Pop3Settings)
    token, tls = front_end_secrets(settings)
    configure_logging("pop3", settings.log_level, settings.log_format)
    # One line per HTTP request to the mailstore would drown the session lines.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return build_context(settings, token, tls.context), tls


def main() -> int:
    try:
        context, tls = load()
    except ConfigError as exc:
        refuse("pop3d", exc)
    server = Pop3Server(context)
    loop_factory = uvloop.new_event_loop if context.settings.pop3_uvloop else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(server, tls))
    except OSError as exc:  # e.g. the port is taken
        print(f"pop3d: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(server: Pop3Server, tls: ReloadingContext) -> None:
    watcher = asyncio.create_task(tls.watch())  # a new certificate: see mailcommon.certwatch
    watch_certificate(lambda: tls.not_after)
    try:
        async with exposed(server.ctx.settings, "pop3"):
            await server.run()
    finally:
        watcher.cancel()


if __name__ == "__main__":
    sys.exit(main())
