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
from mailcommon.startup import load_settings
from mailstore_api.app import create_app
from mailstore_api.fastpath import MailstoreASGI
from mailstore_api.logsetup import setup_logging
from mailstore_api.settings import MailstoreSettings, resolve_tokens
from mailstore_api.volume import hold_data_lock


def broken_link(source: Path, target: Path) -> None:
    raise RuntimeError("injected: a bug in the delivery thread")


def main() -> None:
    settings = load_settings(MailstoreSettings)
    tokens = resolve_tokens(settings)
    hold_data_lock(settings.data_dir)
    setup_logging(settings.log_level, settings.log_format)
    app = create_app(settings, tokens, volume_locked=True)
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
