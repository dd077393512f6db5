"""Helpers the pages share: the redirect after a change, lock states."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import RedirectResponse
from redis.exceptions import RedisError

from mailstore_api.state import State
from mailstore_api.ui.console import root
from mailstore_api.ui.sessions import Session


def done(request: Request, session: Session, path: str, notice: str) -> RedirectResponse:
    """After a change: back to a page (``path`` under the console), with a one-time notice."""
    session.flash = notice
    return RedirectResponse(root(request) + path, status_code=303)


async def locked(state: State, addresses: list[str]) -> dict[str, bool | None]:
    """Whether a POP3 session holds each maildrop's lock (None for all when Redis is down)."""
    try:
        holders = await asyncio.gather(*(state.locks.holder(a) for a in addresses))
    except RedisError:
        return dict.fromkeys(addresses)
    return {a: h is not None for a, h in zip(addresses, holders, strict=True)}


def optional_int(value: str) -> int | str | None:
    """A number field: blank is None (the default); anything else goes to the model's check."""
    value = value.strip()
    if not value:
        return None
    return int(value) if value.isdigit() else value
