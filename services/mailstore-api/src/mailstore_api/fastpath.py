"""The front ends' hot internal calls served straight from ASGI, in front of the FastAPI application.

Every POP3 login and every message costs a few internal calls (auth, snapshot, batch reads,
expunge; RCPT checks and deliveries), and FastAPI's middleware stack, router and dependency
solving cost more CPU than the work of most of them. :class:`MailstoreASGI` wraps the application:
for the calls of :data:`mailstore_api.fastroutes.ROUTES` it does what the middleware and the route
would (request id, service-token check, the body read and validated with the route's pydantic
model, the same function of :mod:`mailstore_api.internal_calls`, the one-shape JSON errors, one
access line); everything else, lifespan included, goes to the FastAPI application unchanged. The
FastAPI routes of the same paths stay, documented in OpenAPI, and are the reference behaviour.

A body that is not JSON (by its content type) or does not validate is handed, as received, to
FastAPI, which answers it (422 ``validation_error``, details without the input) exactly as without
the fast path. The one difference: a body over the route's limit is refused here, 413
``request_too_large``, without being read.
"""

from __future__ import annotations

import time
from typing import cast

import structlog
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from mailstore_api.errors import UNAUTHORIZED, error_answer, error_body
from mailstore_api.fastroutes import JSON, Answer, Call, Route, match, render_json
from mailstore_api.logsetup import access_line
from mailstore_api.middleware import bearer_ok, request_id_of
from mailstore_api.state import State

_UNAUTHORIZED = Answer(401, render_json(UNAUTHORIZED), headers=[(b"www-authenticate", b"Bearer")])
_DISCONNECTED = Answer(400, render_json(error_body("client_disconnected", "the client went away")))


class _TooLarge(Exception):
    pass


class MailstoreASGI:
    """The ASGI application uvicorn serves: the fast routes, then FastAPI."""

    def __init__(self, app: FastAPI, service_token: str) -> None:
        self.app = app
        self._expected = b"Bearer " + service_token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = match(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, username = found
        start = time.perf_counter()
        request_id = request_id_of(scope)
        call = Call(cast(State, self.app.state.store), scope, receive, username, None, {})
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            answer = await self._answer(route, call)
            if isinstance(answer, bytes):  # a body for FastAPI to judge (its 422s)
                await self.app(scope, _replay(answer, receive), send)
                return
            try:
                await _send(send, answer, request_id)
            finally:
                client = scope.get("client")
                access_line(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": answer.status,
                        "bytes": len(answer.body),
                        "ms": round((time.perf_counter() - start) * 1000, 2),
                        "client": client[0] if client else None,
                        "request_id": request_id,
                        **call.log,
                    }
                )

    async def _answer(self, route: Route, call: Call) -> Answer | bytes:
        """The answer, or the body as read when it is not one :func:`_parse` takes."""
        if not bearer_ok(call.scope, self._expected):
            return _UNAUTHORIZED
        if route.model is not None:
            try:
                raw = await _read(call.scope, call.receive, route.limit)
            except _TooLarge:
                return _too_large(route.limit)
            except ClientDisconnect:
                return _DISCONNECTED
            call.body = _parse(call.scope, route.model, raw)
            if call.body is None:
                return raw
        try:
            return await route.handler(call)
        except ClientDisconnect:
            return _DISCONNECTED
        except Exception as exc:
            status, body = error_answer(exc)
            return Answer(status, render_json(body))


def _too_large(limit: int) -> Answer:
    message = f"the request body exceeds {limit} octets"
    return Answer(413, render_json(error_body("request_too_large", message, limit=limit)))


async def _read(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body; :class:`_TooLarge` (before reading) beyond ``limit`` octets."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _TooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(scope: Scope, model: type[BaseModel], raw: bytes) -> BaseModel | None:
    """The validated body, or None for one FastAPI should judge: another content type (FastAPI
    reads JSON only when it is declared), JSON it refuses or that does not fit the model."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            if value != JSON:
                return None
            try:
                return model.model_validate_json(raw)
            except ValidationError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an application that reads the body again."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send(send: Send, answer: Answer, request_id: str) -> None:
    headers = [
        (b"content-length", str(len(answer.body)).encode()),
        (b"content-type", answer.content_type),
        *answer.headers,
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
