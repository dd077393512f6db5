"""Test helper: the mailstore as ``python -m mailstore_api`` serves it, with a fault injected into
its delivery thread: every ``link`` raises RuntimeError (a bug, not a disk error), so the first
delivery stops the thread. Run as ``python serve_broken_committer.py`` with the mailstore's
environment.
"""

from __future__ import annotations

from pathlib import Path

import uvicorn
from launch import configured_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def broken_link(source: Path, target: Path) -> None:
    raise RuntimeError("injected: a bug in the delivery thread")


def with_broken_committer(app: ASGIApp) -> ASGIApp:
    """``app`` whose committer gets the broken ``link`` once start-up has built the state."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_after_start(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                scope["state"]["store"].committer.link = broken_link  # the injection point
            await send(message)

        await app(scope, receive, send_after_start)

    return serve


def main() -> None:
    settings, _, app = configured_app()
    uvicorn.run(
        with_broken_committer(app),
        host=settings.api_bind_host,
        port=settings.api_bind_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
