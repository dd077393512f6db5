"""Console sessions, kept in this process's memory (the mailstore is one process): a random id in
the cookie, the session's CSRF token and its deadlines on the server. A restart signs everyone out;
so does a new admin password."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

#: Sessions kept at most; past it the oldest is dropped (sign-ins are throttled, so only the
#: admin's own browsers fill it).
MAX_SESSIONS = 1000


@dataclass
class Session:
    csrf: str
    created: float
    seen: float
    #: A one-time notice for the next page ("domain added").
    flash: str | None = None


def _key(session_id: str) -> str:
    """What the store is keyed by: a digest, so a look-up's timing says nothing of the ids."""
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class Sessions:
    idle: float
    longest: float
    _by_key: dict[str, Session] = field(default_factory=dict)

    def open(self) -> tuple[str, Session]:
        """A new session and the id for its cookie."""
        while len(self._by_key) >= MAX_SESSIONS:
            del self._by_key[next(iter(self._by_key))]
        session_id = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._by_key[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle deadline moved on), else None."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._by_key.get(key)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.idle or now - session.created > self.longest:
            del self._by_key[key]
            return None
        session.seen = now
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_key.pop(_key(session_id), None)

    def close_all(self) -> None:
        self._by_key.clear()
