"""Prometheus metrics every service shares: the exposition, the front ends' ``/metrics`` listener,
and the certificate-expiry gauge.

Each service declares its own metrics (``smtp_in.metrics``, ``pop3d.metrics``,
``mailstore_api.metrics``) in prometheus-client's default registry, labelled children bound once at
import, so a hot path pays one ``inc()`` (a lock and an add) and no label lookup. smtp-in and pop3
serve them with :func:`exposed` on ``METRICS_BIND_HOST:METRICS_PORT`` (aiohttp's server, on the
service's own event loop); the mailstore on its API port.
"""

from __future__ import annotations

import contextlib
import hmac
import math
from collections.abc import AsyncIterator, Callable

import prometheus_client
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from mailcommon.logging import get_logger
from mailcommon.settings import FrontEndSettings

log = get_logger(__name__)
PATH = "/metrics"
#: Answered 200 without a token, for a container health check of a service with no listener of
#: its own (smtp-out).
HEALTH_PATH = "/healthz"

# Counters without their ``_created`` twin: half the series, nothing a dashboard reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

TLS_EXPIRY = Gauge(
    "maildrop_tls_certificate_expiry_seconds",
    "When the certificate that new TLS handshakes get expires (seconds since the epoch)",
)


def watch_certificate(not_after: Callable[[], float | None]) -> None:
    """Have :data:`TLS_EXPIRY` read ``not_after()`` at every scrape (NaN while there is none)."""

    def read() -> float:
        value = not_after()
        return math.nan if value is None else value

    TLS_EXPIRY.set_function(read)


def exposition() -> bytes:
    """Every metric of this process in Prometheus' text format."""
    return generate_latest()


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header is exactly ``Bearer <token>`` (constant time)."""
    given = (header or "").encode("latin-1", "replace")
    return hmac.compare_digest(given, b"Bearer " + token.encode())


def metrics_app(token: str) -> web.Application:
    """``GET /metrics``: the exposition; with ``token``, only for ``Bearer <token>`` (else 401).
    ``GET /healthz``: 200 to anyone."""

    async def serve(request: web.Request) -> web.Response:
        if token and not bearer_matches(request.headers.get("Authorization"), token):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "a valid bearer token is required"}},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def alive(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")  # the event loop answers: smtp-out's health check

    app = web.Application()
    app.router.add_get(PATH, serve)
    app.router.add_get(HEALTH_PATH, alive)
    return app


@contextlib.asynccontextmanager
async def exposed(settings: FrontEndSettings, service: str) -> AsyncIterator[int | None]:
    """Serve ``/metrics`` on ``METRICS_BIND_HOST:METRICS_PORT`` while the block runs; yields the
    port bound (None when ``METRICS_PORT`` is 0: no listener)."""
    if not settings.metrics_port:
        yield None
        return
    runner = web.AppRunner(metrics_app(settings.metrics_token.get_secret_value()), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.metrics_bind_host, settings.metrics_port)
        await site.start()
        log.info(
            "metrics_listening",
            service=service,
            address=f"{settings.metrics_bind_host}:{settings.metrics_port}",
            token=bool(settings.metrics_token.get_secret_value()),
        )
        yield settings.metrics_port
    finally:
        await runner.cleanup()
