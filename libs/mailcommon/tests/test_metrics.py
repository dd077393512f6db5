"""The front ends' /metrics listener over a real loopback socket, and METRICS_TOKEN's rules."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest
from mailcommon.metrics import TLS_EXPIRY, exposed, watch_certificate
from mailcommon.settings import FrontEndSettings
from mailstack.ports import free_port
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError


def settings(**values: object) -> FrontEndSettings:
    return FrontEndSettings(mail_domains="example.test", **values)  # type: ignore[arg-type]


async def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        return answer.status, answer.headers["Content-Type"], await answer.text()


def test_served_with_the_token_only() -> None:
    token = secrets.token_urlsafe(32)
    port = free_port()
    watch_certificate(lambda: 1_900_000_000.0)

    async def run() -> None:
        config = settings(metrics_port=port, metrics_bind_host="127.0.0.1", metrics_token=token)
        async with exposed(config, "test") as bound:
            assert bound == port
            url = f"http://127.0.0.1:{port}/metrics"
            status, _, body = await get(url)
            assert status == 401 and '"unauthorized"' in body
            assert (await get(url, token + "x"))[0] == 401
            status, kind, body = await get(url, token)
            assert (status, kind) == (200, CONTENT_TYPE_LATEST)
            assert "maildrop_tls_certificate_expiry_seconds 1.9e+09" in body
            # /healthz (smtp-out's container health check) needs no token.
            status, _, body = await get(f"http://127.0.0.1:{port}/healthz")
            assert (status, body) == (200, "ok\n")
        with pytest.raises(aiohttp.ClientConnectionError):  # closed with the block
            await get(url, token)

    asyncio.run(run())
    TLS_EXPIRY.set_function(lambda: float("nan"))


def test_no_port_no_listener() -> None:
    async def run() -> None:
        async with exposed(settings(), "test") as bound:
            assert bound is None

    asyncio.run(run())


@pytest.mark.parametrize(
    "token", ["short", "replace-me-with-a-long-random-string-of-32-chars-or-more"]
)
def test_an_unusable_metrics_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="METRICS_TOKEN"):
        settings(metrics_token=token)
