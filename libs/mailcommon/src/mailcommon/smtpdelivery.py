"""Delivering an SMTP transaction's message to the mailstore: what smtp-in and smtp-submit share.

:class:`Deliveries` runs each upload (a delivery to mailboxes, or smtp-submit's enqueue for
remote recipients) in a task of its own, shielded, so a client that disconnects does not cut it
short, and keeps the tasks in flight for a graceful shutdown to wait for.
:func:`failure_reply` is the one mapping from the mailstore's errors to the reply at the end of DATA.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from mailcommon.client import (
    Delivery,
    Enqueued,
    InsufficientStorage,
    MailstoreClient,
    MailstoreError,
    MailstoreUnavailable,
    MessageTooLarge,
    NotFound,
)

T = TypeVar("T")


class Deliveries:
    """The deliveries of one process: each shielded from client disconnects, awaited on shutdown."""

    def __init__(self, mailstore: MailstoreClient) -> None:
        self.mailstore = mailstore
        self.tasks: set[asyncio.Task[Any]] = set()

    async def deliver(self, users: list[str], message: bytes, key: str) -> Delivery:
        """Store ``message`` for ``users``; ``key`` (the transaction id) is the idempotency key:
        a retry after a dropped connection is stored once (see ``MailstoreClient.deliver``)."""
        return await self._shielded(self.mailstore.deliver(users, message, idempotency_key=key))

    async def enqueue(
        self, sender: str, recipients: list[str], message: bytes, account: str, key: str
    ) -> Enqueued:
        """Put ``message`` in the outbound queue for remote ``recipients``, keyed as
        :meth:`deliver` (``MailstoreClient.enqueue``)."""
        return await self._shielded(
            self.mailstore.enqueue(
                sender, recipients, message, account=account, idempotency_key=key
            )
        )

    async def _shielded(self, upload: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(upload)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not reported as lost


def failure_reply(exc: MailstoreError) -> tuple[str, str]:
    """``(result, reply)`` for a delivery the mailstore did not store (nothing was stored)."""
    if isinstance(exc, MessageTooLarge):
        return "too_large", "552 5.3.4 Message too big for system"
    if isinstance(exc, InsufficientStorage):
        if exc.code == "quota_exceeded":  # fits no recipient's quota
            return "over_quota", "552 5.2.2 Mailbox full: the message exceeds the quota"
        return "insufficient_storage", "452 4.3.1 Insufficient system storage"
    if isinstance(exc, NotFound):
        # A recipient was deleted between RCPT and DATA: the sender retries, and RCPT then
        # refuses that one recipient while the rest get the message.
        return "recipient_gone", "451 4.3.0 Recipient no longer exists, try again"
    if isinstance(exc, MailstoreUnavailable):
        return "tempfail", "451 4.3.0 Mailstore unavailable, try again later"
    return "tempfail", "451 4.3.0 Delivery failed, try again later"
