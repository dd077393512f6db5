"""Blocking calls in worker threads, straight on the event loop's executor machinery.

Lighter than anyio's ``to_thread`` on the delivery path. A cancelled caller still waits for its
call to finish (the thread cannot be stopped), so clean-up never races a running write; the
cancellation is then re-raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


async def in_thread(executor: ThreadPoolExecutor, func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` in ``executor``; returns (or raises) only once it has finished."""
    return await wait_through_cancel(
        asyncio.get_running_loop().run_in_executor(executor, func, *args)
    )


async def wait_through_cancel(future: asyncio.Future[T]) -> T:
    """The outcome of ``future``, which a cancellation of the caller does not cut short: the
    caller still waits for it, then the cancellation is re-raised."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
