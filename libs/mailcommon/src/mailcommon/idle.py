"""An idle timer for a connection (pop3's autologout, smtp-in's idle and DATA timeouts): one
lazily moved timer per session.

``asyncio.timeout`` around every command read schedules and cancels a timer handle per command,
which was a tenth of pop3's CPU in a session of a hundred RETRs. Here, waiting for the next
command only records a deadline; the one timer, when it fires early, moves itself to the latest
deadline, so a busy session costs a float assignment per command and no timer work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleTimer:
    """Calls ``on_expiry`` once a wait started by :meth:`arm` lasts ``seconds`` uninterrupted."""

    __slots__ = ("_deadline", "_handle", "_loop", "_on_expiry", "expired")

    def __init__(self, on_expiry: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_expiry = on_expiry
        self._deadline: float | None = None  # None: not waiting
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def arm(self, seconds: float) -> None:
        """A wait starts now; it may last ``seconds``."""
        self._deadline = self._loop.time() + seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._check)
        elif self._handle.when() > self._deadline:  # a shorter limit than the armed one
            self._handle.cancel()
            self._handle = self._loop.call_at(self._deadline, self._check)

    def disarm(self) -> None:
        """The wait is over (the timer, if armed, finds nothing to do when it fires)."""
        self._deadline = None

    def cancel(self) -> None:
        """For good: the session is over."""
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._deadline is None:
            return  # not waiting now: the next arm() schedules afresh
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._check)
            return
        self._deadline = None
        self.expired = True
        self._on_expiry()
