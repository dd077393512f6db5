"""Pure ASGI middleware around both APIs: request ids and one JSON log line per request;
bearer-token checks.

Authentication runs before routing and body parsing, so without the right token every path under
``/api/`` and ``/internal/`` (even an unknown one) answers 401 and reveals nothing.
"""

from __future__ import annotations

import hmac
import random
import re
import time

import structlog
from mailcommon.metrics import PATH as METRICS_PATH
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailstore_api.errors import unauthorized
from mailstore_api.logsetup import access_line

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    given = ""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
    # Not a secret: a cheap id (os.urandom costs a system call per request on the event loop).
    return given if _REQUEST_ID_RE.fullmatch(given) else f"{random.getrandbits(64):016x}"


def bearer_ok(scope: Scope, expected: bytes) -> bool:
    """Whether the Authorization header is exactly ``expected`` (constant-time comparison)."""
    given = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            given = value
            break
    return hmac.compare_digest(given, expected)


class RequestLog:
    """Bind a request id for the request's duration, echo it, log one line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        status = 500
        sent = 0
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                client = scope.get("client")
                access_line(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "bytes": sent,
                        "ms": round((time.perf_counter() - start) * 1000, 2),
                        "client": client[0] if client else None,
                    }
                )


class BearerAuth:
    """``/api/`` needs the admin token, ``/internal/`` the service token, ``/metrics`` the admin
    token or ``metrics_token``; compared in constant time."""

    def __init__(
        self, app: ASGIApp, admin_token: str, service_token: str, metrics_token: str = ""
    ) -> None:
        self.app = app
        self._prefixes = (
            ("/api/", b"Bearer " + admin_token.encode()),
            ("/internal/", b"Bearer " + service_token.encode()),
        )
        self._metrics = [b"Bearer " + t.encode() for t in (admin_token, metrics_token) if t]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == METRICS_PATH and not any(bearer_ok(scope, t) for t in self._metrics):
                await unauthorized()(scope, receive, send)
                return
            for prefix, expected in self._prefixes:
                if path.startswith(prefix) or path == prefix.rstrip("/"):
                    if not bearer_ok(scope, expected):
                        await unauthorized()(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
