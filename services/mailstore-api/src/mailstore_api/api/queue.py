"""Admin REST API under ``/api/v1/queue`` (admin token): the outbound queue's entries with their
per-recipient state; retry now, drop."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPBearer

from mailstore_api.errors import documented
from mailstore_api.outbound import service
from mailstore_api.outbound.models import QueueEntry, QueueList
from mailstore_api.state import State, get_state

_bearer = HTTPBearer(auto_error=False, scheme_name="admin token")
router = APIRouter(prefix="/api/v1/queue", tags=["queue"], dependencies=[Depends(_bearer)])
StateDep = Annotated[State, Depends(get_state)]
_NOT_FOUND = documented(404, e404="unknown_entry")


@router.get("")
async def list_queue(state: StateDep) -> QueueList:
    """Every entry, the oldest first, with its recipients' state."""
    rows = await state.run_io(state.queue.entries)
    now = time.time()
    return QueueList(entries=[service.view(state, row, now) for row in rows])


@router.get("/{entry_id}", responses=_NOT_FOUND)
async def show_entry(entry_id: str, state: StateDep) -> QueueEntry:
    """One entry."""
    return await service.show(state, entry_id)


@router.post("/{entry_id}/retry", responses=_NOT_FOUND)
async def retry_entry(entry_id: str, state: StateDep) -> QueueEntry:
    """Make its pending recipients due now (a worker's live lease still holds it until it ends)."""
    return await service.retry(state, entry_id)


@router.delete("/{entry_id}", status_code=204, responses=_NOT_FOUND)
async def drop_entry(entry_id: str, state: StateDep) -> Response:
    """Remove it, message and state, without a DSN."""
    await service.drop(state, entry_id)
    return Response(status_code=204)
