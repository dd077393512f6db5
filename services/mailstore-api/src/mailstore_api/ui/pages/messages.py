"""Messages of an account: a page of the list (newest first), one message (headers, text, the
HTML in a sandboxed frame, attachments, raw source), delete (423 while POP3 holds the lock).
Listing, parsing and deleting are the REST API's own route functions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from mailstore_api import accounts, messages
from mailstore_api.api import admin
from mailstore_api.errors import ApiError
from mailstore_api.maildir import UnknownMailbox
from mailstore_api.state import State
from mailstore_api.ui.console import ConsoleDep, SessionDep, StateDep
from mailstore_api.ui.csrf import FormDep
from mailstore_api.ui.htmlmail import FRAME_SANDBOX, frame_csp, frame_document
from mailstore_api.ui.pages.common import done, locked

router = APIRouter()
PAGE_SIZE = 50


def _box(username: str) -> str:
    return f"/accounts/{quote(username)}/messages"


async def _stored(state: State, username: str, message_id: str) -> Path:
    """The file of a message, else 404 as the REST API answers."""
    address = accounts.known_user(state, username)
    try:
        path: Path | None = await state.run_io(state.store.find, address, message_id)
    except UnknownMailbox as exc:
        raise accounts.unknown_user() from exc
    if path is None:
        raise ApiError(404, "unknown_message", "no such message")
    return path


@router.get("/accounts/{username}/messages")
async def messages_page(
    username: str,
    *,
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    state: StateDep,
    page: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    q: Annotated[str, Query(max_length=500)] = "",
    field: Annotated[Literal["", "from", "to", "subject", "text"], Query()] = "",
) -> Response:
    """Page 0 holds the newest messages (of all, or those the search ``q`` finds; ``field``
    empty, as the form's "everything" sends it: anywhere)."""
    address = accounts.known_user(state, username)
    listed = await admin.message_page(
        state,
        address,
        page * PAGE_SIZE,
        PAGE_SIZE,
        newest_first=True,
        q=q if q.strip() else None,
        field=field or None,
    )
    rows, older = listed.messages, listed.total > (page + 1) * PAGE_SIZE
    return console.page(
        request,
        "messages.html",
        session,
        address=address,
        rows=rows,
        total=listed.total,
        page=page,
        older=older,
        q=q,
        field=field,
        fields=("from", "to", "subject", "text"),
        locked=(await locked(state, [address]))[address],
    )


@router.get("/accounts/{username}/messages/{message_id}")
async def message_page(
    username: str,
    message_id: str,
    *,
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    state: StateDep,
    remote: bool = False,
) -> Response:
    address = accounts.known_user(state, username)
    parsed = await admin.get_message(address, message_id, state)
    parts = parsed["parts"]
    return console.page(
        request,
        "message.html",
        session,
        address=address,
        message=parsed,
        texts=[p for p in parts if p["text"] is not None and p["content_type"] == "text/plain"],
        has_html=any(p["content_type"] == "text/html" and p["text"] is not None for p in parts),
        attachments=[p for p in parts if p["text"] is None or p["filename"]],
        remote=remote,
        sandbox=FRAME_SANDBOX,
    )


@router.get("/accounts/{username}/messages/{message_id}/frame")
async def message_frame(
    username: str, message_id: str, _: SessionDep, state: StateDep, remote: bool = False
) -> Response:
    """The HTML body, cleaned, under the frame's own CSP (sandboxed, nothing remote unless
    ``remote``)."""
    path = await _stored(state, username, message_id)
    try:
        document = await state.run_io(lambda: frame_document(messages.load(path), remote))
    except FileNotFoundError as exc:
        raise ApiError(404, "unknown_message", "no such message") from exc
    return HTMLResponse(
        document,
        headers={"Content-Security-Policy": frame_csp(remote), "X-Frame-Options": "SAMEORIGIN"},
    )


@router.get("/accounts/{username}/messages/{message_id}/raw")
async def message_raw(
    username: str, message_id: str, _: SessionDep, state: StateDep, download: bool = False
) -> Response:
    """The message as stored: shown as plain text, or downloaded as ``.eml``."""
    response = await admin.get_raw(username, message_id, state)
    if download:
        response.headers["content-disposition"] = f'attachment; filename="{message_id}.eml"'
    else:
        response.headers["content-type"] = "text/plain; charset=utf-8"
    return response


@router.get("/accounts/{username}/messages/{message_id}/parts/{index}")
async def message_part(
    username: str,
    message_id: str,
    *,
    index: int,
    _: SessionDep,
    state: StateDep,
) -> Response:
    """One MIME part's octets (transfer encoding undone), always as a download."""
    path = await _stored(state, username, message_id)
    try:
        found = await state.run_io(messages.part, path, index)
    except FileNotFoundError:
        found = None
    if found is None:
        raise ApiError(404, "unknown_part", "no such part")
    name = found.get_filename() or f"part-{index}"
    return Response(
        await state.run_io(messages.payload, found),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


@router.post("/accounts/{username}/messages/{message_id}/delete")
async def delete_message(
    username: str,
    message_id: str,
    *,
    request: Request,
    session: SessionDep,
    state: StateDep,
    _: FormDep,
) -> Response:
    address = accounts.known_user(state, username)
    await admin.delete_message(address, message_id, state)
    return done(request, session, _box(address), "Message deleted.")
