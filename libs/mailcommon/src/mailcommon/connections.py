"""Connections in total and per client address, for the front ends built on aiosmtpd."""

from __future__ import annotations

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
