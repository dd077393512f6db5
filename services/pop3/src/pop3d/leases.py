"""One task per process renews the maildrop locks of every logged-in session.

A single renewer (instead of one timer per session) keeps idle sessions cheap. It renews each
lease every third of its TTL; a renewal that finds the lock gone marks the lease lost, and a
session whose lease is lost, or was last renewed a TTL ago, never expunges.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from mailcommon.locks import Lease, MaildropLocks
from mailcommon.logging import get_logger
from redis.exceptions import RedisError

log = get_logger(__name__)

_BATCH = 50  # renewals in flight at once (the Redis pool holds 64 connections)


@dataclass(slots=True)
class LeaseState:
    """A held maildrop lock and what the renewer has learnt about it."""

    lease: Lease
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False


class LeaseKeeper:
    def __init__(self, locks: MaildropLocks, ttl_ms: int) -> None:
        self._locks = locks
        self.ttl_ms = ttl_ms
        self._held: dict[int, LeaseState] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, state: LeaseState) -> None:
        self._held[id(state)] = state

    def discard(self, state: LeaseState) -> None:
        self._held.pop(id(state), None)

    def valid(self, state: LeaseState) -> bool:
        """Whether the lease is still ours as far as this process knows (with a safety margin)."""
        age_ms = (time.monotonic() - state.renewed_at) * 1000
        return not state.lost and age_ms < self.ttl_ms * 0.9

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew(self, state: LeaseState) -> None:
        started = time.monotonic()
        try:
            ok = await self._locks.renew(state.lease, self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("lease_renew_failed", user=state.lease.user, error=str(exc))
            return
        if ok:
            state.renewed_at = started
        else:
            state.lost = True
            self.discard(state)
            log.warning("lease_lost", user=state.lease.user, fence=state.lease.fence)

    async def renew_all(self) -> None:
        held = list(self._held.values())
        for i in range(0, len(held), _BATCH):
            await asyncio.gather(*(self._renew(s) for s in held[i : i + _BATCH]))

    async def _run(self) -> None:
        interval = self.ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew_all()
            except Exception:  # never let the renewer die
                log.exception("lease_keeper_error")
