"""``POST /internal/v1/deliveries`` served straight from ASGI, in front of the FastAPI application.

Delivery is the hot path (every message the MX accepts). FastAPI's middleware stack, router and
dependency solving cost more CPU on the event loop than the rest of a small delivery, and the event
loop is what limits deliveries per second. :class:`MailstoreASGI` wraps the application: for this
one route it does what the middleware and the route would (request id, service-token check, the
same :func:`mailstore_api.delivery.store_delivery`, the one-shape JSON errors, one access line);
everything else, lifespan included, goes to the FastAPI application unchanged. The FastAPI route of
the same path stays, documented in OpenAPI, and is the reference behaviour.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import parse_qsl

from fastapi import FastAPI
from mailcommon.logging import get_logger
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from mailstore_api.delivery import store_delivery
from mailstore_api.errors import ApiError, error_body
from mailstore_api.logsetup import access_line
from mailstore_api.middleware import bearer_ok, request_id_of
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


class MailstoreASGI:
    """The ASGI application uvicorn serves: the delivery fast path, then FastAPI."""

    def __init__(self, app: FastAPI, service_token: str) -> None:
        self.app = app
        self._expected = b"Bearer " + service_token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_of(scope)
        fields: dict[str, Any] = {}
        status, payload = await self._deliver(scope, receive, fields)
        data = json.dumps(payload, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
        finally:
            client = scope.get("client")
            access_line(
                {
                    "method": "POST",
                    "path": PATH,
                    "status": status,
                    "bytes": len(data),
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                    "client": client[0] if client else None,
                    "request_id": request_id,
                    **fields,
                }
            )

    async def _deliver(
        self, scope: Scope, receive: Receive, fields: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if not bearer_ok(scope, self._expected):
            return 401, error_body("unauthorized", "missing or invalid bearer token")
        state = cast(State, self.app.state.store)
        query = scope.get("query_string", b"").decode("latin-1")
        recipients = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "recipient"]
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
        try:
            result = await store_delivery(state, recipients, length, _body(receive))
        except ApiError as exc:
            return exc.status, error_body(exc.code, exc.message, **exc.extra)
        except ClientDisconnect:
            return 400, error_body("client_disconnected", "the client went away")
        except Exception as exc:
            log.error("delivery failed", exc_info=exc)
            return 500, error_body("internal_error", "internal error")
        fields["message_id"] = result["id"]
        fields["size"] = result["size"]
        return 201, result
