"""Admission control: the memory of DATA (connections: :mod:`mailcommon.connections`)."""

from __future__ import annotations

import asyncio


class DataBudget:
    """Bounds the memory that messages being received may take, across all connections.

    aiosmtpd holds a message in memory while it arrives, about ``MEMORY_FACTOR`` times its size at
    the peak (a bytes object per line, then the joined message, then our copy with trace headers
    and the request body: 17 MiB of growth for one 4 MiB message, measured). A transaction
    reserves that much of ``total`` octets before the 354: for the SIZE it declared, or, when it
    declared none, for its first ``FIRST_STEP`` octets only; past those it reserves for the size
    limit in one step (:class:`MeteredReader`). A reservation waits for room when the budget is
    spent.

    No deadlock: a first step is admitted only while room for one whole second step stays free
    beyond it (``keep``), so some transaction can always complete its reservation, finish and
    give its room back; had growth come in several steps, transactions part-way up could hold
    the whole budget between them, each waiting for the others.
    """

    MEMORY_FACTOR = 4
    FIRST_STEP = 1024 * 1024

    def __init__(self, total: int) -> None:
        self.total = total
        self.reserved = 0
        self._room = asyncio.Condition()

    def cost(self, size_limit: int) -> int:
        """What a transaction that may reach ``size_limit`` octets reserves (at most the total)."""
        return min(self.total, size_limit * self.MEMORY_FACTOR)

    async def acquire(self, amount: int, patience: float, *, keep: int = 0) -> bool:
        """Reserve ``amount``, leaving ``keep`` octets free beyond it; False when there was no
        room within ``patience`` seconds."""
        async with self._room:
            try:
                async with asyncio.timeout(patience):
                    await self._room.wait_for(lambda: self.reserved + amount + keep <= self.total)
            except TimeoutError:
                return False
            self.reserved += amount
            return True

    async def release(self, amount: int) -> None:
        async with self._room:
            self.reserved -= amount
            self._room.notify_all()


class BudgetExhausted(Exception):
    """Message data outgrew its first reservation and no more room came within the patience."""


class MeteredReader:
    """The connection's reader while message data arrives: grows the DATA reservation with it.

    aiosmtpd's DATA loop reads through ``readuntil`` and ``read`` only (aiosmtpd 1.4.6,
    ``SMTP.smtp_DATA``); this stands in for the ``StreamReader`` there. Before handing over data
    that takes the transaction past what it reserved, it reserves up to ``ceiling`` (what the
    size limit costs), waiting for room: meanwhile nothing is read, so the socket's own flow
    control holds the sender back.
    """

    def __init__(
        self,
        inner: asyncio.StreamReader,
        budget: DataBudget,
        *,
        reserved: int,
        ceiling: int,
        patience: float,
    ) -> None:
        self.inner = inner
        self.reserved = reserved
        self._budget = budget
        self._ceiling = ceiling
        self._patience = patience
        self._seen = 0

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        data = await self.inner.readuntil(separator)
        if self._outgrown(len(data)):
            await self._grow()
        return data

    async def read(self, n: int = -1) -> bytes:
        data = await self.inner.read(n)
        if self._outgrown(len(data)):
            await self._grow()
        return data

    def _outgrown(self, octets: int) -> bool:
        """Count ``octets`` handed over; whether they take the transaction past its reservation
        (a plain call: this runs for every line of every message)."""
        self._seen += octets
        return self._seen * self._budget.MEMORY_FACTOR > self.reserved < self._ceiling

    async def _grow(self) -> None:
        if not await self._budget.acquire(self._ceiling - self.reserved, self._patience):
            raise BudgetExhausted(f"{self._seen} octets received, {self.reserved} reserved")
        self.reserved = self._ceiling
