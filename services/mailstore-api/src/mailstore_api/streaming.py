"""Serving a stored message: opened once (a later unlink does not matter), read in worker threads.

A file up to :data:`SMALL_FILE` octets is read whole in the same worker-thread call that opens
it and answered with a plain ``Response`` (one thread hop in all); larger ones are streamed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from fastapi.responses import Response, StreamingResponse

from mailstore_api.errors import ApiError
from mailstore_api.maildir import MailStore
from mailstore_api.state import State

CHUNK = 256 * 1024
#: Files up to this size are read whole and sent in one piece.
SMALL_FILE = 256 * 1024


def _open(path: Path) -> tuple[BinaryIO, int] | None:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    return f, os.fstat(f.fileno()).st_size


async def _chunks(state: State, f: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await state.run_io(f.read, CHUNK):
            yield chunk
    finally:
        f.close()


def _load(path: Path | None) -> tuple[BinaryIO, int] | bytes | None:
    """The whole file when it is small, else the open file and its size; None when missing."""
    opened = _open(path) if path is not None else None
    if opened is None:
        return None
    f, size = opened
    if size > SMALL_FILE:
        return opened
    with f:
        return f.read()


def _find_and_load(
    store: MailStore, user: str, message_id: str
) -> tuple[BinaryIO, int] | bytes | None:
    return _load(store.find(user, message_id))


async def stored_message_response(
    state: State, user: str, message_id: str, media_type: str
) -> Response:
    """:func:`message_response` for a message id: the look-up, the open and (for a small file)
    the read in one worker-thread call. ``UnknownMailbox`` propagates."""
    loaded = await state.run_io(_find_and_load, state.store, user, message_id)
    return _respond(state, loaded, media_type, None)


async def message_response(
    state: State, path: Path | None, media_type: str, headers: dict[str, str] | None = None
) -> Response:
    """Send the file at ``path`` with its exact Content-Length; 404 if it is (or went) missing."""
    loaded = await state.run_io(_load, path) if path is not None else None
    return _respond(state, loaded, media_type, headers)


def _respond(
    state: State,
    loaded: tuple[BinaryIO, int] | bytes | None,
    media_type: str,
    headers: dict[str, str] | None,
) -> Response:
    if loaded is None:
        raise ApiError(404, "unknown_message", "no such message")
    if isinstance(loaded, bytes):
        return Response(loaded, media_type=media_type, headers=headers)
    f, size = loaded
    return StreamingResponse(
        _chunks(state, f),
        media_type=media_type,
        headers={"Content-Length": str(size), **(headers or {})},
    )
