"""What a session's log line reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class SessionStats:
    """What the session's log line reports."""

    retrieved: int = 0
    prefetched: int = 0  # RETR/TOP answered from the prefetch
    batches: int = 0  # batch reads from the mailstore
    deleted: int = 0
    octets_sent: int = 0
    cached_login: bool = False  # the login was known from the login cache
    started: float = field(default_factory=time.monotonic)
