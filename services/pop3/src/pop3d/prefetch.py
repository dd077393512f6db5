"""Prefetch of small messages: one mailstore call for a run of sequential RETRs (or TOPs).

A client that downloads a mailbox RETRs 1, 2, 3, ... one after the other. One HTTP request per
message costs more CPU (here and in the mailstore) than the message itself, so when the client
RETRs (or TOPs) a small message n, :func:`fetch` asks the mailstore for n and the following
not-deleted small messages in one batch call, up to ``POP3_PREFETCH_BYTES`` stored octets, and keeps
the ones after n in the session's :class:`Prefetch`; the next RETRs are served from it.

Memory is bounded twice: per session by ``POP3_PREFETCH_BYTES``, and per process by
:class:`PrefetchBudget` (``POP3_PREFETCH_TOTAL``): a batch is only fetched when the process-wide
budget can hold all of it, else the message is read alone as before. The prefetch is dropped as
soon as the client does anything but a RETR, TOP or DELE (see :func:`pop3d.commands.dispatch`),
when it goes backwards or away, and always when the session ends.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from mailcommon.client import BATCH_MAX_BYTES, BATCH_MAX_IDS, MailstoreError

if TYPE_CHECKING:
    from pop3d.session import Session


class PrefetchBudget:
    """Stored octets held in prefetches by all the sessions of this process, and the limit."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, octets: int) -> bool:
        if self.used + octets > self.limit:
            return False
        self.used += octets
        return True

    def give(self, octets: int) -> None:
        self.used -= octets
        assert self.used >= 0, self.used


class Prefetch:
    """Messages fetched ahead, in increasing message-number order, charged to the budget."""

    __slots__ = ("budget", "entries", "held")

    def __init__(self, budget: PrefetchBudget, entries: list[tuple[int, bytes]], held: int) -> None:
        self.budget = budget
        self.entries: deque[tuple[int, bytes]] = deque(entries)
        self.held = held  # octets charged to the budget

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, n: int) -> bytes | None:
        """Message n when it was prefetched (then forgotten); numbers before n are dropped."""
        while self.entries and self.entries[0][0] < n:
            self._forget()
        if self.entries and self.entries[0][0] == n:
            return self._forget()
        return None

    def discard(self, n: int) -> None:
        """Forget message n (marked deleted: it will not be sent)."""
        for i, (m, data) in enumerate(self.entries):
            if m == n:
                del self.entries[i]
                self._give(len(data))
                return

    def release(self) -> None:
        self.entries.clear()
        self._give(self.held)

    def _forget(self) -> bytes:
        _, data = self.entries.popleft()
        self._give(len(data))
        return data

    def _give(self, octets: int) -> None:
        self.held -= octets
        self.budget.give(octets)


def plan(s: Session, n: int, small: int) -> list[int]:
    """Message n and the not-deleted messages after it to fetch together (each at most ``small``
    octets in CRLF form, up to ``POP3_PREFETCH_BYTES`` stored octets and the mailstore's limits).
    """
    snap = s.snapshot
    assert snap is not None
    limit = min(s.ctx.settings.pop3_prefetch_bytes, BATCH_MAX_BYTES)
    numbers: list[int] = []
    total = 0
    for m in range(n, len(snap) + 1):
        if snap.is_deleted(m):
            continue
        stored = snap.stored[m - 1]
        if stored is None or snap.sizes[m - 1] > small or total + stored > limit:
            break
        numbers.append(m)
        total += stored
        if len(numbers) >= BATCH_MAX_IDS:
            break
    return numbers


async def fetch(s: Session, n: int, small: int) -> bytes | None:
    """Message n (stored form) read in one batch with the messages after it, which are kept in
    ``s.prefetch``; None when there is nothing to batch, no budget, or the batch failed (the
    caller then reads message n alone, which gives the right reply for any error)."""
    snap = s.snapshot
    assert snap is not None and s.user is not None
    release(s)
    numbers = plan(s, n, small)
    if len(numbers) < 2:
        return None
    stored = [snap.stored[m - 1] or 0 for m in numbers]
    total = sum(stored)
    budget = s.ctx.prefetch_budget
    if not budget.take(total):
        return None
    try:
        got = await s.ctx.client.fetch_batch(s.user, [snap.ids[m - 1] for m in numbers])
    except MailstoreError:
        budget.give(total)
        return None
    # Charge what is really held (a foreign file's S may have changed since the snapshot).
    held = sum(len(data) for data in got[1:])
    budget.give(total)
    if not budget.take(held):  # a file grew behind our back and the budget is full
        return got[0]
    s.prefetch = Prefetch(budget, list(zip(numbers[1:], got[1:], strict=True)), held)
    s.stats.batches += 1
    return got[0]


def release(s: Session) -> None:
    """Drop the session's prefetch, if any, and give its octets back to the budget."""
    if s.prefetch is not None:
        s.prefetch.release()
        s.prefetch = None
