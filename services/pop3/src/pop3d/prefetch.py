"""Prefetch of small messages: one mailstore call for a run of sequential RETRs (or TOPs).

A client that downloads a mailbox RETRs 1, 2, 3, ... one after the other. One HTTP request per
message costs more CPU (here and in the mailstore) than the message itself, so when the client
RETRs (or TOPs) a small message n, :func:`fetch` asks the mailstore for n and the following
not-deleted small messages in one batch call, up to ``POP3_PREFETCH_BYTES`` stored octets, and keeps
the ones after n in the session's :class:`Prefetcher`; the next RETRs are served from it.

Memory is bounded twice: per session by ``POP3_PREFETCH_BYTES``, and per process by
:class:`PrefetchBudget` (``POP3_PREFETCH_TOTAL``): a batch is only fetched when the process-wide
budget can hold all of it, else the message is read alone as before. The prefetch is dropped as
soon as the client does anything but a RETR, TOP or DELE (:meth:`Prefetcher.after`), when it
goes backwards or away, and always when the session ends; a batch read cancelled half-way gives
its octets back.
"""

from __future__ import annotations

from collections import deque

from mailcommon.client import BATCH_MAX_BYTES, BATCH_MAX_IDS, MailstoreClient, MailstoreError

from pop3d.snapshot import Snapshot
from pop3d.stats import SessionStats


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


#: Commands that keep the prefetch: a sequential download (RETR or TOP, with DELE in between as
#: fetchmail and ``keep off`` clients do). Anything else drops it at once.
KEEPS_PREFETCH: frozenset[bytes] = frozenset((b"RETR", b"TOP", b"DELE"))


def plan(snap: Snapshot, n: int, small: int, limit: int) -> list[int]:
    """Message n and the not-deleted messages after it to fetch together (each at most ``small``
    octets in CRLF form, up to ``limit`` stored octets and the mailstore's limits)."""
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


class Prefetcher:
    """One session's prefetch policy: what it holds, when it reads ahead, when it lets go."""

    __slots__ = ("_budget", "_client", "_held", "_limit", "_stats")

    def __init__(
        self, client: MailstoreClient, budget: PrefetchBudget, limit: int, stats: SessionStats
    ) -> None:
        self._client = client
        self._budget = budget
        self._limit = min(limit, BATCH_MAX_BYTES)  # stored octets per batch; 0: off
        self._stats = stats
        self._held: Prefetch | None = None

    @property
    def holding(self) -> bool:
        return self._held is not None

    async def read(self, user: str, snap: Snapshot, n: int, small: int) -> bytes | None:
        """Message n (stored form) from what was prefetched, or read now in one batch with the
        small messages after it (kept for the next RETRs); None when message n is not small,
        there is nothing to batch, no budget, or the batch failed (the caller then reads it
        alone, which gives the right reply for any error)."""
        if self._held is not None:
            data = self._held.take(n)
            if data is None:  # not the next one: the client went elsewhere
                self.release()
            else:
                self._stats.prefetched += 1
                if not self._held:
                    self.release()
                return data
        if not self._limit or snap.sizes[n - 1] > small:
            return None
        return await self._fetch(user, snap, n, small)

    async def _fetch(self, user: str, snap: Snapshot, n: int, small: int) -> bytes | None:
        numbers = plan(snap, n, small, self._limit)
        if len(numbers) < 2:
            return None
        total = sum(snap.stored[m - 1] or 0 for m in numbers)
        budget = self._budget
        if not budget.take(total):
            return None
        try:
            got = await self._client.fetch_batch(user, [snap.ids[m - 1] for m in numbers])
        except MailstoreError:
            return None
        finally:  # also when cancelled (the session ended): the octets go back
            budget.give(total)
        # Charge what is really held (a foreign file's S may have changed since the snapshot).
        held = sum(len(data) for data in got[1:])
        if not budget.take(held):  # a file grew behind our back and the budget is full
            return got[0]
        self._held = Prefetch(budget, list(zip(numbers[1:], got[1:], strict=True)), held)
        self._stats.batches += 1
        return got[0]

    def discard(self, n: int) -> None:
        """Message n was marked deleted: it will not be sent."""
        if self._held is not None:
            self._held.discard(n)

    def after(self, command: bytes) -> None:
        """Before ``command`` runs: anything but a sequential download drops the prefetch."""
        if self._held is not None and command not in KEEPS_PREFETCH:
            self.release()

    def release(self) -> None:
        """Drop what is held, giving its octets back to the budget."""
        if self._held is not None:
            self._held.release()
            self._held = None
