"""Who receives mail at an address, as the mailstore said recently: saves a round trip per RCPT.

Only positive answers for accounts without a quota are remembered, for ``ttl`` seconds (an answer
about an account with a quota depends on its usage and the declared size: it is asked every
time). An address created a moment ago is asked about again (never refused from the cache); an
account deleted, or an alias changed, within ``ttl`` is still answered as before at RCPT, after
which the mailstore refuses a delivery to an account that is gone (404) and the sender gets
``451`` and retries, so no message is lost or misdelivered.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from mailcommon.client import MailstoreClient


class RecipientCache:
    """``accounts(address, size)`` through the mailstore, remembering answers for ``ttl`` s."""

    def __init__(self, mailstore: MailstoreClient, ttl: float, max_entries: int = 10_000) -> None:
        self._mailstore = mailstore
        self._ttl = ttl
        self._max = max_entries
        self._known: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()

    async def accounts(self, address: str, size: int | None) -> list[str]:
        """The accounts mail to ``address`` goes to. Raises what
        :meth:`MailstoreClient.recipient` raises (NotFound, InsufficientStorage, ...)."""
        now = time.monotonic()
        known = self._known.get(address)
        if known is not None and known[0] > now:
            self._known.move_to_end(address)
            return known[1]
        self._known.pop(address, None)
        answer = await self._mailstore.recipient(address, size)
        if self._ttl > 0 and not answer.limited:
            self._known[address] = (now + self._ttl, answer.accounts)
            while len(self._known) > self._max:
                self._known.popitem(last=False)
        return answer.accounts

    def forget(self, address: str) -> None:
        self._known.pop(address, None)
