"""Server-sent events for an open message list: ``delivered`` with the new message's id, as
each delivery to the account is stored. A stream ends itself after :data:`LIFETIME` seconds and
the browser reconnects (``retry``), so an open console never holds up a shutdown's drain for
long; a comment every :data:`KEEPALIVE` seconds keeps proxies from closing it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from mailstore_api import accounts
from mailstore_api.ui.console import SessionDep, StateDep

router = APIRouter()
LIFETIME = 20.0
KEEPALIVE = 10.0


@router.get("/accounts/{username}/events")
async def message_events(username: str, _: SessionDep, state: StateDep) -> StreamingResponse:
    address = accounts.known_user(state, username)

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        with state.events.subscribe(address) as delivered:
            yield "retry: 1000\n\n"
            deadline = loop.time() + LIFETIME
            while (left := deadline - loop.time()) > 0:
                try:
                    message_id = await asyncio.wait_for(delivered.get(), min(left, KEEPALIVE))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: delivered\ndata: {message_id}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")
