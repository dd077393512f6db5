"""Abuse limits of one process: concurrent connections, in total and per client address.

Failed logins are throttled in Redis by :class:`mailcommon.throttle.AuthThrottle`, shared with
the web console's sign-in.
"""

from __future__ import annotations

from collections import Counter


class ConnectionLimiter:
    """Counts open connections, in total and per client address."""

    __slots__ = ("_per_ip", "max_per_ip", "max_total", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: Counter[str] = Counter()

    def try_open(self, ip: str) -> str | None:
        """Count a new connection; returns why it is refused, or None when it is admitted."""
        if self.total >= self.max_total:
            return "too many connections"
        if self._per_ip[ip] >= self.max_per_ip:
            return "too many connections from your address"
        self.total += 1
        self._per_ip[ip] += 1
        return None

    def close(self, ip: str) -> None:
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
