"""Internal API for the front ends (smtp-in, pop3), under ``/internal/v1``, service token.

The routes parse and answer; the work is in :mod:`mailstore_api.internal_calls` (plain functions,
callable without FastAPI).
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from mailstore_api import internal_calls as calls
from mailstore_api.batch import SIZES_HEADER
from mailstore_api.delivery import store_delivery
from mailstore_api.errors import documented, error_response
from mailstore_api.internal_calls import (
    ApopRequest,
    AuthRequest,
    AuthResult,
    BatchRequest,
    ExpungeRequest,
    ExpungeResult,
    LeaseRequest,
    PasswordAuthResult,
    Recipient,
)
from mailstore_api.maildir import UnknownMailbox
from mailstore_api.state import State, get_state
from mailstore_api.streaming import stored_message_response

# Authentication (Authorization: Bearer <SERVICE_TOKEN>) is enforced by the middleware, before
# anything else; no per-route dependency, which would cost time on the delivery path.
router = APIRouter(prefix="/internal/v1", tags=["internal"])
StateDep = Annotated[State, Depends(get_state)]
# A JSON body over the fast path's limit (mailstore_api.fastroutes) is refused unread.
TOO_LARGE = "request_too_large: a body larger than the call ever needs"


class DeliveryResult(BaseModel):
    id: str
    recipients: list[str]
    size: int


class SnapshotMessage(BaseModel):
    id: str
    size: int  # W: octets with CRLF line ends (what POP3 reports)
    stored_size: int  # S: octets as stored (what the message and batch reads return)


class Snapshot(BaseModel):
    messages: list[SnapshotMessage]
    highest_fence: int
    credential_tag: str  # changes whenever the account's password does


@router.post("/auth", responses=documented(413, e413=TOO_LARGE))
async def auth(body: AuthRequest, state: StateDep) -> PasswordAuthResult:
    """Verify a user name and password."""
    return await calls.auth(state, body)


@router.post("/auth/apop", responses=documented(413, e413=TOO_LARGE))
async def auth_apop(body: ApopRequest, state: StateDep) -> AuthResult:
    """Verify an APOP digest (always invalid unless APOP_ENABLED)."""
    return await calls.auth_apop(state, body)


@router.get("/recipients/{username}", responses=documented(404))
async def recipient(username: str, state: StateDep) -> Recipient:
    """Whether a mailbox exists; the canonical (lower-case) name."""
    return calls.recipient(state, username)


@router.post(
    "/deliveries",
    status_code=201,
    responses=documented(
        404,
        413,
        503,
        507,
        e404="unknown_user (nothing stored)",
        e503="delivery_unavailable: the delivery thread has stopped (restart the mailstore)",
    ),
)
async def deliver(
    request: Request,
    state: StateDep,
    recipient: Annotated[list[str], Query(min_length=1)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Store the request body (message/rfc822, CRLF or LF) once for every recipient.

    With ``Idempotency-Key`` (1-200 printable ASCII characters, else 422), a key already stored
    within ``DELIVERY_KEY_RETENTION`` is stored no more: the answer is the first 201 body.

    Served by :class:`mailstore_api.fastpath.MailstoreASGI` (the same code without FastAPI's
    routing and dependency machinery); this route documents it and serves as the fallback.
    """
    try:
        result = await store_delivery(
            state,
            recipient,
            request.headers.get("content-length"),
            request.stream(),
            idempotency_key,
        )
    except ClientDisconnect:
        return error_response(400, "client_disconnected", "the client went away")
    structlog.contextvars.bind_contextvars(message_id=result["id"], size=result["size"])
    return JSONResponse(result, status_code=201)


@router.post(
    "/mailboxes/{username}/snapshot",
    response_model=Snapshot,
    responses=documented(
        404, 409, 413, 503, e409="lock_not_held / stale_fence (with highest_fence)", e413=TOO_LARGE
    ),
)
async def snapshot(username: str, body: LeaseRequest, state: StateDep) -> Response:
    """The mailbox's messages, oldest first, for the holder of the maildrop lock."""
    return Response(await calls.snapshot(state, username, body), media_type="application/json")


@router.get(
    "/mailboxes/{username}/messages/{message_id}",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}, **documented(404)},
)
async def message(username: str, message_id: str, state: StateDep) -> Response:
    """One message as stored (LF line ends), with Content-Length S; streamed above 256 KiB."""
    user = calls.mailbox(state, username)
    try:
        return await stored_message_response(state, user, message_id, "message/rfc822")
    except UnknownMailbox as exc:
        raise calls.unknown_user() from exc


@router.post(
    "/mailboxes/{username}/messages/batch",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": f"the stored bytes of each message, concatenated in order; "
            f"{SIZES_HEADER}: their stored sizes, comma-separated",
        },
        **documented(404, 413, e413=f"batch_too_large: more than 1 MiB stored in all; {TOO_LARGE}"),
    },
)
async def message_batch(username: str, body: BatchRequest, state: StateDep) -> Response:
    """Several messages as stored, in one response and one file-system pass (pop3's prefetch).

    404 ``unknown_message`` when any id is not (or no longer) in the mailbox.
    """
    batch = await calls.message_batch(state, username, body)
    return Response(
        batch.data,
        media_type="application/octet-stream",
        headers={SIZES_HEADER: batch.sizes_header},
    )


@router.post(
    "/mailboxes/{username}/expunge",
    responses=documented(
        404, 409, 413, 503, e409="lock_not_held / stale_fence (with highest_fence)", e413=TOO_LARGE
    ),
)
async def expunge(username: str, body: ExpungeRequest, state: StateDep) -> ExpungeResult:
    """Delete messages for the holder of the maildrop lock; already-gone ids are reported apart."""
    return await calls.expunge(state, username, body)
