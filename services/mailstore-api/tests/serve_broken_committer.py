"""Test helper: the mailstore as ``python -m mailstore_api`` serves it, with a fault injected into
its delivery thread: every ``link`` raises RuntimeError (a bug, not a disk error), so the first
delivery stops the thread. Run as ``python serve_broken_committer.py`` with the mailstore's
environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from launch import configured_app
from mailstore_api.fastpath import MailstoreASGI


def broken_link(source: Path, target: Path) -> None:
    raise RuntimeError("injected: a bug in the delivery thread")


def main() -> None:
    settings, tokens, app = configured_app()
    served = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with served(app):
            app.state.store.committer.link = broken_link  # the committer's injection point
            yield

    app.router.lifespan_context = lifespan
    uvicorn.run(
        MailstoreASGI(app, tokens.service),
        host=settings.api_bind_host,
        port=settings.api_bind_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
