"""The lease check before a snapshot or an expunge (see docs/architecture.md, fencing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mailstore_api.errors import ApiError
from mailstore_api.state import State

T = TypeVar("T")


async def under_lease(
    state: State, username: str, lock_token: str, fence: int, work: Callable[[], T]
) -> tuple[int, T]:
    """Accept the caller as the maildrop's holder, registering ``fence``, then do ``work`` (a
    blocking call) in the same worker-thread call; returns the highest fence and its result.

    409 ``lock_not_held`` when Redis does not hold exactly ``"<fence>:<token>"``; 409
    ``stale_fence`` (with ``highest_fence``) when a higher fencing number has been seen (then
    ``work`` is not done); Redis errors propagate (503 ``redis_unavailable``).
    """
    holder = await state.locks.holder(username)
    if holder != f"{fence}:{lock_token}":
        highest = await state.run_io(state.db.highest_fence, username)
        raise ApiError(
            409,
            "lock_not_held",
            "the maildrop lock is not held with this token and fence",
            highest_fence=highest,
        )

    def register_then_work() -> tuple[int, T]:
        ok, highest = state.db.register_fence(username, fence, lock_token)
        if not ok:
            raise _StaleFence(highest)
        return highest, work()

    try:
        return await state.run_io(register_then_work)
    except _StaleFence as exc:
        raise ApiError(
            409,
            "stale_fence",
            f"fence {fence} is below the highest seen ({exc.highest}) or came with another token",
            highest_fence=exc.highest,
        ) from None


class _StaleFence(Exception):
    def __init__(self, highest: int) -> None:
        super().__init__(highest)
        self.highest = highest
