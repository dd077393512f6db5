"""The calls the fast path serves: a route table from method and path to a small handler.

Each handler adapts one function of :mod:`mailstore_api.internal_calls` (or the delivery) to an
:class:`Answer`, the way the FastAPI route of the same path answers. :mod:`mailstore_api.fastpath`
does the rest (token, body, errors, the response and its access line).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from mailstore_api import internal_calls as calls
from mailstore_api.batch import SIZES_HEADER
from mailstore_api.delivery import store_delivery
from mailstore_api.state import State

JSON = b"application/json"
#: The largest JSON request body read (more is 413 ``request_too_large``): room for any valid
#: auth, APOP, snapshot or batch request, even with every character escaped.
BODY_LIMIT = 128 * 1024
#: For an expunge: 100,000 ids (the most one call takes) of 70 characters, unescaped.
EXPUNGE_LIMIT = 8 * 1024 * 1024
#: The path segments followed by a user name (``{username}`` in the route table).
_PER_USER = frozenset({"recipients", "mailboxes"})


@dataclass(slots=True)
class Answer:
    """A whole response: status, body, content type and any other headers."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def render_json(content: Any) -> bytes:
    """JSON as Starlette's ``JSONResponse`` renders it (FastAPI's answers: the same bytes)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def json_answer(status: int, content: BaseModel | dict[str, Any]) -> Answer:
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return Answer(status, render_json(content))


@dataclass(slots=True)
class Call:
    """One request as a handler sees it."""

    state: State
    scope: Scope
    receive: Receive
    username: str  # the {username} path segment, or ""
    body: Any  # the request model, validated (None for a route without one)
    log: dict[str, Any]  # extra fields for the access line


Handler = Callable[[Call], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    #: The JSON body's model (read up to ``limit`` octets and validated before the handler).
    model: type[BaseModel] | None = None
    limit: int = BODY_LIMIT
    #: False for a request FastAPI should answer (its own 422 for a missing query parameter).
    takes: Callable[[Scope], bool] | None = None


async def _auth(call: Call) -> Answer:
    return json_answer(200, await calls.auth(call.state, call.body))


async def _auth_apop(call: Call) -> Answer:
    return json_answer(200, await calls.auth_apop(call.state, call.body))


async def _recipient(call: Call) -> Answer:
    return json_answer(200, calls.recipient(call.state, call.username))


async def _snapshot(call: Call) -> Answer:
    return Answer(200, await calls.snapshot(call.state, call.username, call.body))


async def _batch(call: Call) -> Answer:
    batch = await calls.message_batch(call.state, call.username, call.body)
    sizes = (SIZES_HEADER.lower().encode(), batch.sizes_header.encode())
    return Answer(200, batch.data, b"application/octet-stream", [sizes])


async def _expunge(call: Call) -> Answer:
    return json_answer(200, await calls.expunge(call.state, call.username, call.body))


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


def _recipients(scope: Scope) -> list[str]:
    query = scope.get("query_string", b"").decode("latin-1")
    return [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "recipient"]


async def _deliver(call: Call) -> Answer:
    """The message is the body, streamed; the recipients are in the query string."""
    recipients = _recipients(call.scope)
    length = key = None
    for name, value in call.scope["headers"]:
        if name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"idempotency-key":
            key = value.decode("latin-1")
    result = await store_delivery(call.state, recipients, length, _body(call.receive), key)
    call.log["message_id"] = result["id"]
    call.log["size"] = result["size"]
    return json_answer(201, result)


_V1 = "/internal/v1"
ROUTES: dict[tuple[str, str], Route] = {
    ("POST", f"{_V1}/auth"): Route(_auth, calls.AuthRequest),
    ("POST", f"{_V1}/auth/apop"): Route(_auth_apop, calls.ApopRequest),
    ("GET", f"{_V1}/recipients/{{username}}"): Route(_recipient),
    ("POST", f"{_V1}/deliveries"): Route(_deliver, takes=lambda scope: bool(_recipients(scope))),
    ("POST", f"{_V1}/mailboxes/{{username}}/snapshot"): Route(_snapshot, calls.LeaseRequest),
    ("POST", f"{_V1}/mailboxes/{{username}}/messages/batch"): Route(_batch, calls.BatchRequest),
    ("POST", f"{_V1}/mailboxes/{{username}}/expunge"): Route(
        _expunge, calls.ExpungeRequest, EXPUNGE_LIMIT
    ),
}


def match(scope: Scope) -> tuple[Route, str] | None:
    """The route for an HTTP request, and the user name in its path; None for every request the
    fast path leaves to FastAPI. A user name is one non-empty segment, as FastAPI's
    ``{username}`` (of ``scope["path"]``, percent-decoded)."""
    path: str = scope["path"]
    parts = path.split("/", 5)  # "", "internal", "v1", "mailboxes", "<user>", "snapshot"
    username = ""
    if len(parts) >= 5 and parts[3] in _PER_USER:
        username, parts[4] = parts[4], "{username}"
        if not username:
            return None
        path = "/".join(parts)
    route = ROUTES.get((scope["method"], path))
    if route is None or (route.takes is not None and not route.takes(scope)):
        return None
    return route, username
