"""Admission control: connections in total and per client address, and the memory of DATA."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Protocol


class Drainable(Protocol):
    """What the server needs of a connection to shut down gracefully."""

    def is_idle(self) -> bool: ...

    def close_for_shutdown(self) -> None: ...

    def abort(self) -> None: ...


class ConnectionRegistry:
    """Counts live connections; refuses beyond ``max_total`` overall or ``max_per_ip`` per address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.members: set[Drainable] = set()
        self._per_ip: Counter[str] = Counter()
        # Set on SIGTERM: no new transactions, idle connections are closed.
        self.draining = False

    def admit(self, conn: Drainable, ip: str) -> str | None:
        """Register ``conn``; or, without registering it, the reason it must be refused."""
        if self.draining:
            return "shutting_down"
        if len(self.members) >= self.max_total:
            return "too_many_connections"
        if self._per_ip[ip] >= self.max_per_ip:
            return "too_many_connections_from_address"
        self.members.add(conn)
        self._per_ip[ip] += 1
        return None

    def release(self, conn: Drainable, ip: str) -> None:
        """Forget ``conn`` (idempotent)."""
        if conn in self.members:
            self.members.discard(conn)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    def count(self, ip: str | None = None) -> int:
        return len(self.members) if ip is None else self._per_ip.get(ip, 0)


class DataBudget:
    """Bounds the memory that messages being received may take, across all connections.

    aiosmtpd holds a message in memory while it arrives, about ``MEMORY_FACTOR`` times its size at
    the peak (a bytes object per line, then the joined message, then our copy with trace headers
    and the request body: 17 MiB of growth for one 4 MiB message, measured). Each DATA reserves that much of
    ``total`` octets for the size it may reach, and waits for room when the budget is spent.
    """

    MEMORY_FACTOR = 4

    def __init__(self, total: int) -> None:
        self.total = total
        self.reserved = 0
        self._room = asyncio.Condition()

    def cost(self, size_limit: int) -> int:
        """What a transaction that may reach ``size_limit`` octets reserves (at most the total)."""
        return min(self.total, size_limit * self.MEMORY_FACTOR)

    async def acquire(self, amount: int, patience: float) -> bool:
        """Reserve ``amount``; False when there was no room within ``patience`` seconds."""
        async with self._room:
            try:
                async with asyncio.timeout(patience):
                    await self._room.wait_for(lambda: self.reserved + amount <= self.total)
            except TimeoutError:
                return False
            self.reserved += amount
            return True

    async def release(self, amount: int) -> None:
        async with self._room:
            self.reserved -= amount
            self._room.notify_all()
