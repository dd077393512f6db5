"""Admin REST API under ``/api/v1``: the online backup (a tar stream) and message imports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from mailstore_api import accounts, backup, imports, threadstream
from mailstore_api.errors import ApiError, documented
from mailstore_api.state import State, get_state

_bearer = HTTPBearer(auto_error=False, scheme_name="admin token")
router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(_bearer)])
StateDep = Annotated[State, Depends(get_state)]
#: The latest date an imported message may have (seconds since the epoch: the year 2242).
LATEST = 2**33


class Imported(BaseModel):
    id: str = Field(description="the message id (POP3 UIDL) it is stored under")
    size: int = Field(description="octets as stored")
    imported: bool = Field(description="false: the same message was imported before")


@router.get(
    "/backup",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}},
)
async def get_backup(state: StateDep) -> StreamingResponse:
    """A consistent online backup of the volume, streamed as a tar (see docs/architecture.md,
    "Backups and imports"); check it with ``mailctl verify``."""

    def produce(out: backup.Writable) -> None:
        backup.write_backup(state.settings.data_dir, state.store, out)

    return StreamingResponse(
        threadstream.stream(produce, "backup"),
        media_type="application/x-tar",
        headers={"Content-Disposition": 'attachment; filename="maildrop-backup.tar"'},
    )


@router.post(
    "/users/{username}/import",
    status_code=201,
    responses=documented(404, 413, 507),
    openapi_extra={"requestBody": {"content": {"message/rfc822": {}}, "required": True}},
)
async def import_message(
    username: str,
    request: Request,
    state: StateDep,
    received: Annotated[
        float, Query(ge=0, le=LATEST, description="the message's date, seconds since the epoch")
    ],
) -> Imported:
    """Store one message (the body) with its original date, once: the same message imported
    again (same Message-ID and content) is answered with ``imported: false``."""
    address = accounts.known_user(state, username)
    limit = state.settings.max_message_size
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413, "message_too_large", f"the message exceeds {limit} octets", limit=limit
            )
    answer: dict[str, Any] = await imports.import_message(state, address, bytes(body), received)
    return Imported(**answer)
