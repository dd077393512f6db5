"""The group committer on real files: batching, per-message failures, failed syncs, cancellation."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest
from mailstore_api.committer import GroupCommitter, VolumeSync
from mailstore_api.maildir import MailStore, UnknownMailbox, sizes_from_name

USERS = ("alice", "bob", "carol")


class FailingSync(VolumeSync):
    """The real syncfs, except that the calls numbered in ``failing`` (from 1) report EIO."""

    def __init__(self, path: Path, failing: set[int]) -> None:
        super().__init__(path)
        self.failing = failing
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls in self.failing:
            raise OSError(errno.EIO, "syncfs: injected write-back error")
        super().__call__()


class BlockingSync(VolumeSync):
    """The real syncfs, once ``release`` is set; ``entered`` tells that a sync is waiting."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        self.release.wait(10)
        super().__call__()


@pytest.fixture
def store(tmp_path: Path) -> MailStore:
    store = MailStore(tmp_path / "mail", "test.example")
    for user in USERS:
        store.create(user)
    return store


def files(store: MailStore, user: str, sub: str) -> list[str]:
    return sorted(os.listdir(store.maildir(user) / sub))


async def deliver(committer: GroupCommitter, recipients: list[str], data: bytes) -> str:
    return await committer.commit(recipients, len(data), len(data) + data.count(b"\n"), data, None)


def test_concurrent_deliveries_are_batched_and_each_lands_once(store: MailStore) -> None:
    committer = GroupCommitter(store, VolumeSync(store.root))
    messages = {
        i: (list(USERS[: 1 + i % 3]), f"Subject: {i}\n\n".encode() + b"line\n" * i)
        for i in range(200)
    }

    async def run() -> list[str]:
        return await asyncio.gather(*(deliver(committer, r, d) for r, d in messages.values()))

    try:
        names = asyncio.run(run())
    finally:
        committer.stop()
    assert len(set(names)) == 200
    assert committer.batches < 50  # 200 deliveries queued at once share syncs
    for (recipients, data), name in zip(messages.values(), names, strict=True):
        assert sizes_from_name(name) == (len(data), len(data) + data.count(b"\n"))
        for user in USERS:
            path = store.maildir(user) / "new" / name
            assert path.exists() == (user in recipients)
            if user in recipients:
                assert path.read_bytes() == data
    for user in USERS:
        assert files(store, user, "tmp") == []
        assert len(files(store, user, "new")) == sum(user in r for r, _ in messages.values())


def test_one_failing_delivery_does_not_fail_its_batch(store: MailStore) -> None:
    committer = GroupCommitter(store, VolumeSync(store.root))

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(
            deliver(committer, ["alice"], b"one\n"),
            deliver(committer, ["alice", "ghost"], b"half a delivery\n"),  # link fails
            deliver(committer, ["ghost"], b"nowhere\n"),  # tmp/ fails
            deliver(committer, ["bob"], b"two\n"),
            return_exceptions=True,
        )

    try:
        first, partial, nowhere, second = asyncio.run(run())
    finally:
        committer.stop()
    assert isinstance(partial, UnknownMailbox)
    assert isinstance(nowhere, UnknownMailbox)
    assert isinstance(first, str) and isinstance(second, str)
    assert files(store, "alice", "new") == [first]
    assert files(store, "bob", "new") == [second]
    for user in USERS:
        assert files(store, user, "tmp") == []


@pytest.mark.parametrize("failing", [{1}, {2}], ids=["file sync", "link sync"])
def test_a_failed_sync_fails_the_delivery_and_leaves_nothing(
    store: MailStore, failing: set[int]
) -> None:
    committer = GroupCommitter(store, FailingSync(store.root, failing))

    async def run() -> tuple[BaseException | str, str]:
        try:
            failed: BaseException | str = await deliver(committer, ["alice", "bob"], b"lost\n")
        except OSError as exc:
            failed = exc
        return failed, await deliver(committer, ["alice", "bob"], b"kept\n")

    try:
        failed, kept = asyncio.run(run())
    finally:
        committer.stop()
    assert isinstance(failed, OSError) and failed.errno == errno.EIO
    for user in ("alice", "bob"):  # the failed one is nowhere; the next batch is unaffected
        assert files(store, user, "new") == [kept]
        assert files(store, user, "tmp") == []


def test_a_spilled_message_is_committed_from_its_tmp_file(store: MailStore) -> None:
    committer = GroupCommitter(store, VolumeSync(store.root))
    data = b"Subject: big\n\n" + b"x" * 300_000 + b"\n"
    fd, tmp = store.open_tmp("carol")
    os.write(fd, data)
    os.close(fd)

    async def run() -> str:
        return await committer.commit(["carol", "bob"], len(data), len(data) + 3, b"", tmp)

    try:
        name = asyncio.run(run())
    finally:
        committer.stop()
    assert (store.maildir("carol") / "new" / name).read_bytes() == data
    assert (store.maildir("bob") / "new" / name).read_bytes() == data
    assert files(store, "carol", "tmp") == []


def test_a_cancelled_caller_waits_for_its_delivery_to_be_settled(store: MailStore) -> None:
    sync = BlockingSync(store.root)
    committer = GroupCommitter(store, sync)

    async def run() -> None:
        task = asyncio.create_task(deliver(committer, ["alice"], b"in flight\n"))
        await asyncio.to_thread(sync.entered.wait, 10)
        task.cancel()
        await asyncio.sleep(0.2)  # the behaviour: a window in which it must not finish
        assert not task.done()  # still waiting for the committer, not racing it
        sync.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    finally:
        sync.release.set()
        committer.stop()
    assert len(files(store, "alice", "new")) == 1  # committed: the caller only stopped waiting
    assert files(store, "alice", "tmp") == []
