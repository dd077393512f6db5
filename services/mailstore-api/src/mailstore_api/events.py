"""New-message announcements for the console's live list: a delivery tells the subscribers of
each recipient's account (on the event loop; no one waits, a slow subscriber loses nothing but
announcements: its queue is bounded and it reloads the list anyway)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

#: Announcements a subscriber may fall behind by before the oldest are dropped.
QUEUE = 100


class Events:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[str]]] = {}

    def delivered(self, accounts: list[str], message_id: str) -> None:
        for account in accounts:
            for subscriber in self._subscribers.get(account, ()):
                if subscriber.full():
                    subscriber.get_nowait()
                subscriber.put_nowait(message_id)

    @contextmanager
    def subscribe(self, account: str) -> Iterator[asyncio.Queue[str]]:
        """A queue of the ids delivered to ``account`` while the block runs."""
        subscriber: asyncio.Queue[str] = asyncio.Queue(QUEUE)
        self._subscribers.setdefault(account, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            subscribers = self._subscribers[account]
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[account]
