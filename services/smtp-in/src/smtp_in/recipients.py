"""Which mailboxes exist, as the mailstore said recently: saves a round trip per message.

Only positive answers are remembered, for ``ttl`` seconds: a user created a moment ago is asked
about again (never refused from the cache), and a user deleted within ``ttl`` is still accepted at
RCPT, after which the mailstore refuses the delivery (404) and the sender gets ``451`` and retries,
so no message is lost or misdelivered.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from mailcommon.client import MailstoreClient


class RecipientCache:
    """``exists(user)`` through the mailstore, remembering "yes" for ``ttl`` seconds."""

    def __init__(self, mailstore: MailstoreClient, ttl: float, max_entries: int = 10_000) -> None:
        self._mailstore = mailstore
        self._ttl = ttl
        self._max = max_entries
        self._known: OrderedDict[str, float] = OrderedDict()

    async def exists(self, user: str) -> bool:
        """Raises MailstoreError (MailstoreUnavailable) when the mailstore cannot say."""
        now = time.monotonic()
        expires = self._known.get(user)
        if expires is not None and expires > now:
            self._known.move_to_end(user)
            return True
        if not await self._mailstore.recipient_exists(user):
            self._known.pop(user, None)
            return False
        if self._ttl > 0:
            self._known[user] = now + self._ttl
            self._known.move_to_end(user)
            while len(self._known) > self._max:
                self._known.popitem(last=False)
        return True

    def forget(self, user: str) -> None:
        self._known.pop(user, None)
