"""The ASGI application: the internal router and the FastAPI admin API behind one token check and
one access log; start-up and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from mailcommon.logging import get_logger
from mailcommon.metrics import PATH as METRICS_PATH
from mailcommon.metrics import exposition
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mailstore_api import metrics, ui
from mailstore_api.api import addresses, admin, backups, health, internal, queue
from mailstore_api.errors import install_error_handlers
from mailstore_api.maildir import TMP_MAX_AGE
from mailstore_api.middleware import BearerAuth, RequestLog
from mailstore_api.settings import MailstoreSettings, Tokens
from mailstore_api.state import State, build_state

log = get_logger(__name__)


class AdminAPI(FastAPI):
    """FastAPI: the admin API, health, the docs; its OpenAPI document has the internal API too."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            internal.add_to_openapi(super().openapi())  # generated once, kept by FastAPI
        return super().openapi()


class Mailstore:
    """``/internal/`` to the internal router, ``/metrics`` to the exposition; everything else,
    lifespan included, to FastAPI."""

    def __init__(self, internal_api: ASGIApp, admin_api: ASGIApp) -> None:
        self.internal = internal_api
        self.admin = admin_api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/internal/"):
            await self.internal(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await Response(exposition(), media_type=CONTENT_TYPE_LATEST)(scope, receive, send)
        else:
            await self.admin(scope, receive, send)


def create_app(settings: MailstoreSettings, tokens: Tokens, volume_locked: bool = False) -> ASGIApp:
    """Build the application; the state (database, Maildirs, Redis) is opened at start-up and
    handed to every request as the lifespan state ``store``.

    ``volume_locked``: the caller holds the data directory's lock (:mod:`mailstore_api.volume`),
    so every file in a ``tmp/`` is a crash leftover and start-up removes them all; otherwise only
    those older than 36 hours (the Maildir rule for shared Maildirs).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, State]]:
        state = build_state(settings, tokens)
        removed = await state.run_io(state.store.start_up, 0 if volume_locked else TMP_MAX_AGE)
        orphans, lost = await state.run_io(
            state.queue.remove_orphans, 0 if volume_locked else TMP_MAX_AGE
        )
        if lost:
            log.error("queue entries without their message file dropped", entries=lost)
        metrics.QUEUE_ENTRIES.set(await state.run_io(state.queue.count))
        log.info(
            "mailstore ready",
            data_dir=str(settings.data_dir),
            domains=len(state.directory.domains),
            accounts=len(state.directory.accounts),
            aliases=len(state.directory.aliases),
            stale_tmp_removed=removed,
            queue_orphans_removed=orphans,
            apop=settings.apop_enabled,
        )
        try:
            yield {"store": state}
        finally:
            await state.aclose()
            log.info("mailstore stopped")

    admin_api = AdminAPI(
        title="mailstore-api",
        version="0.1.0",
        description="Accounts and Maildirs of the mail drop: admin REST API and internal API.",
        lifespan=lifespan,
    )
    install_error_handlers(admin_api)
    admin_api.include_router(health.router)
    admin_api.include_router(admin.router)
    admin_api.include_router(addresses.router)
    admin_api.include_router(backups.router)
    admin_api.include_router(queue.router)
    ui.install(admin_api, settings)
    app = BearerAuth(
        Mailstore(internal.InternalAPI(), admin_api),
        admin_token=tokens.admin,
        service_token=tokens.service,
        metrics_token=settings.metrics_token.get_secret_value(),
    )
    return RequestLog(app)
