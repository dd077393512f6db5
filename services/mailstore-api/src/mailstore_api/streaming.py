"""Serving a stored message: opened once (a later unlink does not matter), read in worker threads."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from fastapi.responses import StreamingResponse

from mailstore_api.errors import ApiError
from mailstore_api.state import State

CHUNK = 256 * 1024


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


async def message_response(
    state: State, path: Path | None, media_type: str, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """Stream the file at ``path`` with its exact Content-Length; 404 if it is (or went) missing."""
    opened = await state.run_io(_open, path) if path is not None else None
    if opened is None:
        raise ApiError(404, "unknown_message", "no such message")
    f, size = opened
    return StreamingResponse(
        _chunks(state, f),
        media_type=media_type,
        headers={"Content-Length": str(size), **(headers or {})},
    )
