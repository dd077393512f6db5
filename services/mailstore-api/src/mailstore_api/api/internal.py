"""Internal API for the front ends (smtp-in, pop3), under ``/internal/v1``, service token."""

from __future__ import annotations

import json
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from mailcommon.logging import get_logger
from mailcommon.names import is_valid_username
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from mailstore_api import accounts
from mailstore_api.batch import (
    MAX_IDS,
    SIZES_HEADER,
    BatchMissing,
    BatchTooLarge,
    read_batch,
)
from mailstore_api.delivery import store_delivery
from mailstore_api.errors import ApiError, documented, error_response
from mailstore_api.fencing import check_lease
from mailstore_api.maildir import UnknownMailbox
from mailstore_api.state import State, get_state
from mailstore_api.streaming import stored_message_response

log = get_logger(__name__)
# Authentication (Authorization: Bearer <SERVICE_TOKEN>) is enforced by the middleware, before
# anything else; no per-route dependency, which would cost time on the delivery path.
router = APIRouter(prefix="/internal/v1", tags=["internal"])
StateDep = Annotated[State, Depends(get_state)]


class AuthRequest(BaseModel):
    username: str = Field(max_length=256)
    password: str = Field(max_length=4096)


class ApopRequest(BaseModel):
    username: str = Field(max_length=256)
    timestamp: str = Field(max_length=1024)
    digest: str = Field(max_length=256)


class AuthResult(BaseModel):
    valid: bool
    username: str | None


class Recipient(BaseModel):
    username: str


class DeliveryResult(BaseModel):
    id: str
    recipients: list[str]
    size: int


class LeaseRequest(BaseModel):
    lock_token: str = Field(min_length=1, max_length=256)
    fence: int = Field(ge=0, le=2**63 - 1)


class ExpungeRequest(LeaseRequest):
    ids: list[str] = Field(max_length=100_000)


class BatchRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS)


class SnapshotMessage(BaseModel):
    id: str
    size: int  # W: octets with CRLF line ends (what POP3 reports)
    stored_size: int  # S: octets as stored (what the message and batch reads return)


class Snapshot(BaseModel):
    messages: list[SnapshotMessage]
    highest_fence: int


class ExpungeResult(BaseModel):
    deleted: list[str]
    already_gone: list[str]


def _result(name: str | None) -> AuthResult:
    return AuthResult(valid=name is not None, username=name)


@router.post("/auth")
async def auth(body: AuthRequest, state: StateDep) -> AuthResult:
    """Verify a user name and password."""
    return _result(await accounts.verify_password(state, body.username, body.password))


@router.post("/auth/apop")
async def auth_apop(body: ApopRequest, state: StateDep) -> AuthResult:
    """Verify an APOP digest (always invalid unless APOP_ENABLED)."""
    return _result(await accounts.verify_apop(state, body.username, body.timestamp, body.digest))


@router.get("/recipients/{username}", responses=documented(404))
async def recipient(username: str, state: StateDep) -> Recipient:
    """Whether a mailbox exists; the canonical (lower-case) name."""
    name = username.lower()
    if not is_valid_username(name) or name not in state.users:
        raise ApiError(404, "unknown_user", "no such user")
    return Recipient(username=name)


@router.post(
    "/deliveries",
    status_code=201,
    responses=documented(404, 413, 507, e404="unknown_user (nothing stored)"),
)
async def deliver(
    request: Request,
    state: StateDep,
    recipient: Annotated[list[str], Query(min_length=1)],
) -> JSONResponse:
    """Store the request body (message/rfc822, CRLF or LF) once for every recipient.

    Served by :class:`mailstore_api.fastpath.MailstoreASGI` (the same code without FastAPI's
    routing and dependency machinery); this route documents it and serves as the fallback.
    """
    try:
        result = await store_delivery(
            state, recipient, request.headers.get("content-length"), request.stream()
        )
    except ClientDisconnect:
        return error_response(400, "client_disconnected", "the client went away")
    structlog.contextvars.bind_contextvars(message_id=result["id"], size=result["size"])
    return JSONResponse(result, status_code=201)


def _mailbox(state: State, username: str) -> str:
    if not is_valid_username(username) or username not in state.users:
        raise ApiError(404, "unknown_user", "no such user")
    return username


@router.post(
    "/mailboxes/{username}/snapshot",
    response_model=Snapshot,
    responses=documented(404, 409, 503, e409="lock_not_held / stale_fence (with highest_fence)"),
)
async def snapshot(username: str, body: LeaseRequest, state: StateDep) -> Response:
    """The mailbox's messages, oldest first, for the holder of the maildrop lock."""
    user = _mailbox(state, username)
    highest = await check_lease(state, user, body.lock_token, body.fence)
    try:
        entries = await state.run_io(state.store.messages, user)
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    # The Snapshot shape, serialized directly: a model per message costs more than the listing.
    messages = [{"id": e.id, "size": e.size_crlf, "stored_size": e.size} for e in entries]
    data = json.dumps({"messages": messages, "highest_fence": highest}, separators=(",", ":"))
    return Response(data, media_type="application/json")


@router.get(
    "/mailboxes/{username}/messages/{message_id}",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}, **documented(404)},
)
async def message(username: str, message_id: str, state: StateDep) -> Response:
    """One message as stored (LF line ends), with Content-Length S; streamed above 256 KiB."""
    user = _mailbox(state, username)
    try:
        return await stored_message_response(state, user, message_id, "message/rfc822")
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc


@router.post(
    "/mailboxes/{username}/messages/batch",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": f"the stored bytes of each message, concatenated in order; "
            f"{SIZES_HEADER}: their stored sizes, comma-separated",
        },
        **documented(404, 413, e413="batch_too_large: more than 1 MiB stored in all"),
    },
)
async def message_batch(username: str, body: BatchRequest, state: StateDep) -> Response:
    """Several messages as stored, in one response and one file-system pass (pop3's prefetch).

    404 ``unknown_message`` when any id is not (or no longer) in the mailbox.
    """
    user = _mailbox(state, username)
    try:
        sizes, data = await state.run_io(read_batch, state.store, user, body.ids)
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    except BatchMissing as exc:
        raise ApiError(404, "unknown_message", "no such message") from exc
    except BatchTooLarge as exc:
        raise ApiError(413, "batch_too_large", "the messages exceed 1 MiB in all") from exc
    return Response(
        data,
        media_type="application/octet-stream",
        headers={SIZES_HEADER: ",".join(map(str, sizes))},
    )


@router.post(
    "/mailboxes/{username}/expunge",
    responses=documented(404, 409, 503, e409="lock_not_held / stale_fence (with highest_fence)"),
)
async def expunge(username: str, body: ExpungeRequest, state: StateDep) -> ExpungeResult:
    """Delete messages for the holder of the maildrop lock; already-gone ids are reported apart."""
    user = _mailbox(state, username)
    await check_lease(state, user, body.lock_token, body.fence)
    try:
        deleted, gone = await state.run_io(state.store.delete, user, body.ids)
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    log.info("expunged", user=user, deleted=len(deleted), already_gone=len(gone))
    return ExpungeResult(deleted=deleted, already_gone=gone)
