"""The lease check before a snapshot or an expunge (see docs/architecture.md, fencing)."""

from __future__ import annotations

from mailstore_api.errors import ApiError
from mailstore_api.state import State


async def check_lease(state: State, username: str, lock_token: str, fence: int) -> int:
    """Accept the caller as the maildrop's holder, registering ``fence``; returns the highest.

    409 ``lock_not_held`` when Redis does not hold exactly ``"<fence>:<token>"``; 409
    ``stale_fence`` (with ``highest_fence``) when a higher fencing number has been seen; Redis
    errors propagate (503 ``redis_unavailable``).
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
    ok, highest = await state.run_io(state.db.register_fence, username, fence)
    if not ok:
        raise ApiError(
            409,
            "stale_fence",
            f"fence {fence} is lower than the highest seen ({highest})",
            highest_fence=highest,
        )
    return int(highest)
