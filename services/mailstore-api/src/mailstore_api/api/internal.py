"""Internal API for the front ends (smtp-in, pop3), under ``/internal/v1``: one small Starlette router.

Every POP3 login and message and every RCPT and delivery costs internal calls, and FastAPI's
per-request machinery (its middleware stack, routing over every admin route, dependency solving)
cost more CPU than the work of most of them (figures in ``bench/RESULTS.md``, "Internal API
router"). So these calls do not go through FastAPI: :mod:`mailstore_api.app` hands every path
under ``/internal/`` to :class:`InternalAPI`, a Starlette ``Router`` over :data:`OPERATIONS`,
once :mod:`mailstore_api.middleware` has checked the service token and with its access line.

Each :class:`Operation` is one call: its method and path, the pydantic model its JSON body is
validated with (read up to ``limit`` octets; more is 413 ``request_too_large``, unread), the
handler (which calls :mod:`mailstore_api.internal_calls` or the delivery) and what OpenAPI says of
it: :func:`add_to_openapi` puts the table into FastAPI's document, so ``/openapi.json`` and
``/docs`` describe both APIs from the models the router validates with. Every error (``ApiError``,
a body that is not valid, Redis down, no such route, another method) answers in the one JSON shape
of :mod:`mailstore_api.errors`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

import structlog
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from mailstore_api import internal_calls as calls
from mailstore_api.batch import SIZES_HEADER
from mailstore_api.delivery import store_delivery
from mailstore_api.errors import (
    ApiError,
    ErrorResponse,
    documented,
    error_answer,
    http_error_response,
    validation_error,
)
from mailstore_api.maildir import UnknownMailbox
from mailstore_api.outbound import models as queue_models
from mailstore_api.outbound import service as queue
from mailstore_api.state import State
from mailstore_api.streaming import stored_message_response

PREFIX = "/internal/v1"
JSON = "application/json"
#: The largest JSON request body read (more is 413 ``request_too_large``): room for any valid
#: auth, APOP, snapshot or batch request, even with every character escaped.
BODY_LIMIT = 128 * 1024
#: For an expunge: 100,000 ids (the most one call takes) of 70 characters, unescaped.
EXPUNGE_LIMIT = 8 * 1024 * 1024
TOO_LARGE = "request_too_large: a body larger than the call ever needs"
#: The OpenAPI name of the service token's security scheme.
SECURITY = "service token"


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it."""

    state: State
    request: Request
    body: Any  # the operation's body model, validated; None for an operation without one


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One call of the internal API: how it is served and how OpenAPI describes it."""

    method: str
    path: str  # under PREFIX, with Starlette's (and OpenAPI's) {name} path parameters
    handler: Handler  # its docstring is the documentation
    body: type[BaseModel] | None = None  # the JSON request body
    limit: int = BODY_LIMIT  # octets of the JSON body, at most
    status: int = 200
    returns: type[BaseModel] | None = None  # the JSON response body; else ``content``
    content: dict[str, Any] = field(default_factory=dict)  # the success response, if not JSON
    errors: dict[int | str, dict[str, Any]] = field(default_factory=documented)
    parameters: tuple[dict[str, Any], ...] = ()  # query and header parameters
    request_content: tuple[str, ...] = ()  # media types of a body that is not JSON


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type=JSON)


async def _auth(call: Call) -> Response:
    """Verify a user name and password."""
    return _json(await calls.auth(call.state, call.body))


async def _auth_apop(call: Call) -> Response:
    """Verify an APOP digest (always invalid unless APOP_ENABLED)."""
    return _json(await calls.auth_apop(call.state, call.body))


async def _recipient(call: Call) -> Response:
    """Who receives mail at an address: its accounts (an alias expanded), or why nobody does.

    For RCPT: 404 ``unknown_domain`` (not a domain of this server) or ``unknown_user``; 503
    ``no_postmaster``; 507 ``mailbox_full`` (every account at its quota) or ``quota_exceeded``
    (a message of the declared ``size`` fits none).
    """
    size = call.request.query_params.get("size")
    if size is not None and not (size.isdigit() and len(size) <= 18):
        raise ApiError(422, "validation_error", "query.size: octets, a non-negative integer")
    return _json(
        calls.recipient(
            call.state, call.request.path_params["address"], int(size) if size else None
        )
    )


async def _deliver(call: Call) -> Response:
    """Store the request body (message/rfc822, CRLF or LF) once for every recipient.

    The 201 answer comes once the message is durably on disk.
    """
    request = call.request
    result = await store_delivery(
        call.state,
        request.query_params.getlist("recipient"),
        request.headers.get("content-length"),
        request.stream(),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    structlog.contextvars.bind_contextvars(message_id=result["id"], size=result["size"])
    return JSONResponse(result, status_code=201)


async def _sender_addresses(call: Call) -> Response:
    """The addresses an account may send as: its own, then each alias that delivers to it
    (catch-alls excluded). 404 ``unknown_user``."""
    username = call.request.path_params["username"]
    return _json(calls.sender_addresses(call.state, username))


async def _snapshot(call: Call) -> Response:
    """The mailbox's messages, oldest first, for the holder of the maildrop lock."""
    username = call.request.path_params["username"]
    return Response(await calls.snapshot(call.state, username, call.body), media_type=JSON)


async def _batch(call: Call) -> Response:
    """Several messages as stored, in one response and one file-system pass (pop3's prefetch).

    404 ``unknown_message`` when any id is not (or no longer) in the mailbox.
    """
    username = call.request.path_params["username"]
    batch = await calls.message_batch(call.state, username, call.body)
    return Response(
        batch.data,
        media_type="application/octet-stream",
        headers={SIZES_HEADER: batch.sizes_header},
    )


async def _message(call: Call) -> Response:
    """One message as stored (LF line ends), with Content-Length S; streamed above 256 KiB."""
    params = call.request.path_params
    user = calls.mailbox(call.state, params["username"])
    try:
        return await stored_message_response(
            call.state, user, params["message_id"], "message/rfc822"
        )
    except UnknownMailbox as exc:
        raise calls.unknown_user() from exc


async def _expunge(call: Call) -> Response:
    """Delete messages for the holder of the maildrop lock; already-gone ids are reported apart."""
    username = call.request.path_params["username"]
    return _json(await calls.expunge(call.state, username, call.body))


async def _enqueue(call: Call) -> Response:
    """Queue the request body (the message as it will be sent) for remote recipients.

    The 201 answer comes once the message and its state are durably on disk.
    """
    request = call.request
    params = request.query_params
    result, _ = await queue.enqueue(
        call.state,
        sender=params.get("sender", ""),
        recipients=params.getlist("recipient"),
        account=params.get("account"),
        content_length=request.headers.get("content-length"),
        chunks=request.stream(),
        key=request.headers.get("idempotency-key"),
    )
    structlog.contextvars.bind_contextvars(queue_id=result.id, size=result.size)
    return _json(result, 201)


async def _claim(call: Call) -> Response:
    """Lease up to ``limit`` queue entries due now, each with its pending recipients due now.

    An entry leased is handed to no other claim until the lease expires (``lease_seconds``);
    entries past QUEUE_LIFETIME are failed (and bounced) first, never handed out.
    """
    return _json(await queue.claim(call.state, call.body))


async def _queue_message(call: Call) -> Response:
    """A queue entry's message, byte for byte as enqueued; streamed above 256 KiB."""
    return await queue.message(call.state, call.request.path_params["entry_id"])


async def _report(call: Call) -> Response:
    """Per-recipient results of a delivery attempt, under the entry's current lease.

    ``delivered`` and ``failed`` settle the recipient (failed: a DSN to a local sender);
    ``deferred`` makes it due again after the back-off, or fails it as expired past
    QUEUE_LIFETIME. When every recipient is settled the entry is removed.
    """
    entry_id = call.request.path_params["entry_id"]
    return _json(await queue.report(call.state, entry_id, call.body))


_LEASE_ERRORS = documented(
    404, 409, 413, 503, e409="lock_not_held / stale_fence (with highest_fence)", e413=TOO_LARGE
)
_AUTH_ERRORS = documented(413, e413=TOO_LARGE)
#: Every call of the internal API, the hot ones first (the router tries them in this order).
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/auth",
        _auth,
        calls.AuthRequest,
        returns=calls.PasswordAuthResult,
        errors=_AUTH_ERRORS,
    ),
    Operation(
        "GET",
        "/recipients/{address}",
        _recipient,
        returns=calls.Recipient,
        errors=documented(
            404,
            503,
            507,
            e404="unknown_domain / unknown_user",
            e503="no_postmaster",
            e507="mailbox_full / quota_exceeded",
        ),
        parameters=(
            {
                "name": "size",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
                "description": "the message size the sender declared (SMTP SIZE)",
            },
        ),
    ),
    Operation(
        "POST",
        "/deliveries",
        _deliver,
        status=201,
        returns=calls.DeliveryResult,
        errors=documented(
            404,
            413,
            503,
            507,
            e404="unknown_user (nothing stored)",
            e503="the mailstore cannot store now (see the error code); nothing stored",
        ),
        parameters=(
            {
                "name": "recipient",
                "in": "query",
                "required": True,
                "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "description": "an account address (a bare name: the primary domain); "
                "repeated for each recipient",
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "smtp-in's transaction id: a delivery whose key was already "
                "stored is stored once and answered as the first time",
            },
        ),
        request_content=("message/rfc822", "application/octet-stream"),
    ),
    Operation(
        "POST",
        "/mailboxes/{username}/snapshot",
        _snapshot,
        calls.LeaseRequest,
        returns=calls.Snapshot,
        errors=_LEASE_ERRORS,
    ),
    Operation(
        "POST",
        "/mailboxes/{username}/messages/batch",
        _batch,
        calls.BatchRequest,
        content={
            "content": {"application/octet-stream": {}},
            "description": f"the stored bytes of each message, concatenated in order; "
            f"{SIZES_HEADER}: their stored sizes, comma-separated",
        },
        errors=documented(
            404, 413, e413=f"batch_too_large: more than 1 MiB stored in all; {TOO_LARGE}"
        ),
    ),
    Operation(
        "GET",
        "/mailboxes/{username}/messages/{message_id}",
        _message,
        content={"content": {"message/rfc822": {}}, "description": "the message as stored"},
        errors=documented(404),
    ),
    Operation(
        "POST",
        "/mailboxes/{username}/expunge",
        _expunge,
        calls.ExpungeRequest,
        EXPUNGE_LIMIT,
        returns=calls.ExpungeResult,
        errors=_LEASE_ERRORS,
    ),
    Operation(
        "GET",
        "/accounts/{username}/sender-addresses",
        _sender_addresses,
        returns=calls.SenderAddresses,
        errors=documented(404),
    ),
    Operation(
        "POST",
        "/queue",
        _enqueue,
        status=201,
        returns=queue_models.Enqueued,
        errors=documented(
            404,
            413,
            503,
            507,
            e404="unknown_account (nothing stored)",
            e413="message_too_large",
        ),
        parameters=(
            {
                "name": "sender",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "the envelope sender (MAIL FROM); empty or <> for the null sender",
            },
            {
                "name": "recipient",
                "in": "query",
                "required": True,
                "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "description": "a remote recipient address; repeated for each",
            },
            {
                "name": "account",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "the submitting account",
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the submission's transaction id: an enqueue whose key was "
                "already stored (within DELIVERY_KEY_RETENTION) is stored once and answered as "
                "the first time",
            },
        ),
        request_content=("message/rfc822", "application/octet-stream"),
    ),
    Operation(
        "POST",
        "/queue/claim",
        _claim,
        queue_models.ClaimRequest,
        returns=queue_models.Claimed,
        errors=_AUTH_ERRORS,
    ),
    Operation(
        "GET",
        "/queue/{entry_id}/message",
        _queue_message,
        content={"content": {"message/rfc822": {}}, "description": "the message as enqueued"},
        errors=documented(404, e404="unknown_entry"),
    ),
    Operation(
        "POST",
        "/queue/{entry_id}/report",
        _report,
        queue_models.ReportRequest,
        returns=queue_models.Reported,
        errors=documented(
            404,
            409,
            413,
            e404="unknown_entry",
            e409="stale_lease (not the current lease, or expired) / recipient_settled",
            e413=TOO_LARGE,
        ),
    ),
    Operation(
        "POST",
        "/auth/apop",
        _auth_apop,
        calls.ApopRequest,
        returns=calls.AuthResult,
        errors=_AUTH_ERRORS,
    ),
)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_too_large", f"the request body exceeds {limit} octets", limit=limit
    )


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule: JSON when the type says so (``application/json``, ``…+json``) or is absent."""
    if content_type is None:
        return True
    main, _, sub = content_type.partition(";")[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def _json_body(request: Request, model: type[BaseModel], limit: int) -> BaseModel:
    """The body validated with ``model``; 413 beyond ``limit`` octets (unread when declared)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    if not _is_json(request.headers.get("content-type")):
        raise ApiError(422, "validation_error", "body: the request body must be JSON")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        return model.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise validation_error(
            exc.errors(include_url=False, include_input=False), ("body",)
        ) from None


class _Endpoint:
    """The ASGI application of one operation: body, handler, errors in the one shape."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        op = self.operation
        request = Request(scope, receive)
        try:
            body = None if op.body is None else await _json_body(request, op.body, op.limit)
            response = await op.handler(Call(cast(State, scope["state"]["store"]), request, body))
        except Exception as exc:
            status, content = error_answer(exc)
            response = JSONResponse(content, status_code=status)
        await response(scope, receive, send)


class InternalAPI:
    """The ASGI application of ``/internal/``: :data:`OPERATIONS` on Starlette's router.

    The state comes from the lifespan (``scope["state"]["store"]``, :mod:`mailstore_api.app`).
    """

    def __init__(self) -> None:
        self._router = Router(
            [Route(PREFIX + op.path, _Endpoint(op), methods=[op.method]) for op in OPERATIONS],
            redirect_slashes=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Inside an application Starlette's router raises its 404 and 405 (instead of answering
        # plain text), for them to be answered in the one error shape here.
        scope["app"] = self
        try:
            await self._router(scope, receive, send)
        except HTTPException as exc:
            await http_error_response(exc)(scope, receive, send)


# -- OpenAPI -------------------------------------------------------------------------------------

_REF = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"{(\w+)}")
#: A model and the mode of its JSON schema -> the reference to it.
_Refs = dict[tuple[Any, JsonSchemaMode], dict[str, Any]]


def add_to_openapi(schema: dict[str, Any]) -> None:
    """Add :data:`OPERATIONS` (paths, the schemas of their models, the service token's security
    scheme) to an OpenAPI document (FastAPI's, generated once)."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    models += [(op.body, "validation") for op in OPERATIONS if op.body is not None]
    models += [(op.returns, "serialization") for op in OPERATIONS if op.returns is not None]
    found, definitions = models_json_schema(models, ref_template=_REF)
    refs: _Refs = dict(found)
    paths = schema.setdefault("paths", {})
    for op in OPERATIONS:
        paths.setdefault(PREFIX + op.path, {})[op.method.lower()] = _operation(op, refs)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(definitions.get("$defs", {}))
    components.setdefault("securitySchemes", {})[SECURITY] = {"type": "http", "scheme": "bearer"}


def _operation(op: Operation, refs: _Refs) -> dict[str, Any]:
    summary, _, description = (inspect.getdoc(op.handler) or "").partition("\n")
    success = (
        {
            "description": HTTPStatus(op.status).phrase,
            "content": {JSON: {"schema": refs[op.returns, "serialization"]}},
        }
        if op.returns is not None
        else op.content
    )
    error = {JSON: {"schema": refs[ErrorResponse, "serialization"]}}
    item: dict[str, Any] = {
        "tags": ["internal"],
        "summary": summary.strip(),
        "operationId": re.sub(
            r"\W", "_", f"{op.handler.__name__[1:]}{PREFIX}{op.path}_{op.method.lower()}"
        ),
        "security": [{SECURITY: []}],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAMETER.findall(op.path)
        ]
        + list(op.parameters),
        "responses": {
            str(op.status): success,
            **{
                str(code): {"description": doc["description"], "content": error}
                for code, doc in op.errors.items()
            },
        },
    }
    if description.strip():
        item["description"] = description.strip()
    if op.body is not None:
        item["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": refs[op.body, "validation"]}},
        }
    elif op.request_content:
        binary = {"schema": {"type": "string", "format": "binary"}}
        item["requestBody"] = {
            "required": True,
            "content": dict.fromkeys(op.request_content, binary),
        }
    return item
