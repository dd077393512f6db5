"""A session's prefetch against the real mailstore: what it holds is charged to the process's
budget, and a batch read cancelled half-way (the session ended) gives its octets back."""

from __future__ import annotations

import asyncio

import pytest
from mailcommon.client import MailstoreClient, SnapshotEntry
from pop3d.prefetch import PrefetchBudget, Prefetcher
from pop3d.snapshot import Snapshot
from pop3d.stats import SessionStats
from pop3kit import Mail

SMALL = 64 * 1024


def snapshot_of(mail: Mail, user: str) -> Snapshot:
    entries = []
    for message_id in mail.messages(user):
        stored = mail.raw(user, message_id)
        entries.append(SnapshotEntry(message_id, len(stored) + stored.count(b"\n"), len(stored)))
    return Snapshot(entries)


@pytest.fixture
def mailbox(mail: Mail) -> tuple[str, Snapshot]:
    user, _ = mail.user()
    for i in range(5):
        mail.deliver(user, f"Subject: {i}\r\n\r\n".encode() + b"body\r\n" * 200)
    return user, snapshot_of(mail, user)


def test_held_octets_are_charged_and_a_cancelled_read_gives_them_back(
    mail: Mail, mailbox: tuple[str, Snapshot]
) -> None:
    user, snap = mailbox

    async def run() -> None:
        client = MailstoreClient(mail.stack.api_url, mail.stack.service_token)
        try:
            budget = PrefetchBudget(1 << 20)
            stats = SessionStats()
            prefetch = Prefetcher(client, budget, 256 * 1024, stats)
            # the control: message 1 read with 2..5, which are held and charged
            first = await prefetch.read(user, snap, 1, SMALL)
            assert first is not None and stats.batches == 1
            assert budget.used == sum(snap.stored[m] or 0 for m in range(1, 5))
            assert await prefetch.read(user, snap, 2, SMALL) is not None
            assert stats.prefetched == 1
            prefetch.release()
            assert budget.used == 0

            # cancelled while the batch is on its way: nothing stays charged
            task = asyncio.create_task(prefetch.read(user, snap, 1, SMALL))
            while budget.used == 0:
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert budget.used == 0
            assert not prefetch.holding
        finally:
            await client.aclose()

    asyncio.run(run())
