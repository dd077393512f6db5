"""The FastAPI application: routers, error shape, middleware, start-up and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from mailcommon.logging import get_logger

from mailstore_api.api import admin, health, internal
from mailstore_api.errors import install_error_handlers
from mailstore_api.maildir import TMP_MAX_AGE
from mailstore_api.middleware import BearerAuth, RequestLog
from mailstore_api.settings import MailstoreSettings, Tokens
from mailstore_api.state import build_state

log = get_logger(__name__)


def create_app(settings: MailstoreSettings, tokens: Tokens, volume_locked: bool = False) -> FastAPI:
    """Build the application; the state (database, Maildirs, Redis) is opened at start-up.

    ``volume_locked``: the caller holds the data directory's lock (:mod:`mailstore_api.volume`),
    so every file in a ``tmp/`` is a crash leftover and start-up removes them all; otherwise only
    those older than 36 hours (the Maildir rule for shared Maildirs).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings, tokens)
        removed = await state.run_io(state.store.start_up, 0 if volume_locked else TMP_MAX_AGE)
        app.state.store = state
        log.info(
            "mailstore ready",
            data_dir=str(settings.data_dir),
            users=len(state.users),
            stale_tmp_removed=removed,
            apop=settings.apop_enabled,
        )
        try:
            yield
        finally:
            await state.aclose()
            log.info("mailstore stopped")

    app = FastAPI(
        title="mailstore-api",
        version="0.1.0",
        description="Accounts and Maildirs of the mail drop: admin REST API and internal API.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(internal.router)
    app.include_router(admin.router)
    app.add_middleware(BearerAuth, admin_token=tokens.admin, service_token=tokens.service)
    app.add_middleware(RequestLog)
    return app
