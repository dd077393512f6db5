"""``POST /internal/v1/deliveries`` served straight from ASGI, past FastAPI's routing.

Delivery is the hot path (every message the MX accepts); FastAPI's router, dependency solving and
exception middleware cost more CPU than the rest of a small delivery. This middleware sits inside
the request log and the bearer-token check, so logging and authentication are unchanged; it runs
the same :func:`mailstore_api.delivery.store_delivery` as the documented FastAPI route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import parse_qsl

from mailcommon.logging import get_logger
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from mailstore_api.delivery import store_delivery
from mailstore_api.errors import ApiError, error_body
from mailstore_api.state import State

PATH = "/internal/v1/deliveries"
log = get_logger(__name__)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class DeliveryFastPath:
    """Serve POST deliveries directly; everything else goes on to the application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = cast(State, scope["app"].state.store)
        query = scope.get("query_string", b"").decode("latin-1")
        recipients = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "recipient"]
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
        try:
            result = await store_delivery(state, recipients, length, _body(receive))
        except ApiError as exc:
            await _send_json(send, exc.status, error_body(exc.code, exc.message, **exc.extra))
            return
        except ClientDisconnect:
            return
        except Exception as exc:
            log.error("delivery failed", exc_info=exc)
            await _send_json(send, 500, error_body("internal_error", "internal error"))
            return
        await _send_json(send, 201, result)
