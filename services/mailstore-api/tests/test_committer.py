"""The group committer on real files: batching, per-message failures, failed syncs, cancellation,
failures of clean-up, fail stop, the per-file fsync mode, idempotency keys and crash recovery.

Faults are injected into the real thread only through its system-call attributes (``syncfs``,
``fsync``, ``link``, ``unlink``) or by a real read-only remount of a tmpfs."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstore_api.committer import (
    CommitterStopped,
    GroupCommitter,
    Stored,
    VolumeSync,
    open_sync,
    syncfs_reports_errors,
)
from mailstore_api.db import DeliveryKeys
from mailstore_api.maildir import MailStore, UnknownMailbox, sizes_from_name

# Accounts are local@domain (MailStore has no notion of a bare name).
ALICE, BOB, CAROL = "alice@test.example", "bob@test.example", "carol@test.example"
USERS = (ALICE, BOB, CAROL)


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


def make(
    store: MailStore, sync: VolumeSync | str | None = "syncfs", keys: Path | None = None
) -> GroupCommitter:
    """A committer on ``store`` with its keys beside the Maildirs; ``sync`` "syncfs" is the
    real one, None the per-file mode."""
    volume = VolumeSync(store.root) if sync == "syncfs" else sync
    assert not isinstance(volume, str)
    database = DeliveryKeys(keys or store.root.parent / "deliveries.sqlite3", fsync_commits=False)
    return GroupCommitter(store, database, volume, 86400.0)


async def deliver(
    committer: GroupCommitter, recipients: list[str], data: bytes, key: str | None = None
) -> str:
    return (await deliver_keyed(committer, recipients, data, key)).id


async def deliver_keyed(
    committer: GroupCommitter, recipients: list[str], data: bytes, key: str | None
) -> Stored:
    crlf = len(data) + data.count(b"\n")
    return await committer.commit(recipients, len(data), crlf, data, None, key=key)


def test_concurrent_deliveries_are_batched_and_each_lands_once(store: MailStore) -> None:
    committer = make(store)
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
    committer = make(store)

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(
            deliver(committer, [ALICE], b"one\n"),
            deliver(committer, [ALICE, "ghost@test.example"], b"half a delivery\n"),  # link fails
            deliver(committer, ["ghost@test.example"], b"nowhere\n"),  # tmp/ fails
            deliver(committer, [BOB], b"two\n"),
            return_exceptions=True,
        )

    try:
        first, partial, nowhere, second = asyncio.run(run())
    finally:
        committer.stop()
    assert isinstance(partial, UnknownMailbox)
    assert isinstance(nowhere, UnknownMailbox)
    assert isinstance(first, str) and isinstance(second, str)
    assert files(store, ALICE, "new") == [first]
    assert files(store, BOB, "new") == [second]
    for user in USERS:
        assert files(store, user, "tmp") == []


@pytest.mark.parametrize("failing", [{1}, {2}], ids=["file sync", "link sync"])
def test_a_failed_sync_fails_the_delivery_and_leaves_nothing(
    store: MailStore, failing: set[int]
) -> None:
    committer = make(store, FailingSync(store.root, failing))

    async def run() -> tuple[BaseException | str, str]:
        try:
            failed: BaseException | str = await deliver(committer, [ALICE, BOB], b"lost\n")
        except OSError as exc:
            failed = exc
        return failed, await deliver(committer, [ALICE, BOB], b"kept\n")

    try:
        failed, kept = asyncio.run(run())
    finally:
        committer.stop()
    assert isinstance(failed, OSError) and failed.errno == errno.EIO
    for user in (ALICE, BOB):  # the failed one is nowhere; the next batch is unaffected
        assert files(store, user, "new") == [kept]
        assert files(store, user, "tmp") == []


def test_a_spilled_message_is_committed_from_its_tmp_file(store: MailStore) -> None:
    committer = make(store)
    data = b"Subject: big\n\n" + b"x" * 300_000 + b"\n"
    fd, tmp = store.open_tmp(CAROL)
    os.write(fd, data)
    os.close(fd)

    async def run() -> str:
        stored = await committer.commit([CAROL, BOB], len(data), len(data) + 3, b"", tmp)
        return stored.id

    try:
        name = asyncio.run(run())
    finally:
        committer.stop()
    assert (store.maildir(CAROL) / "new" / name).read_bytes() == data
    assert (store.maildir(BOB) / "new" / name).read_bytes() == data
    assert files(store, CAROL, "tmp") == []


def test_a_cancelled_caller_waits_for_its_delivery_to_be_settled(store: MailStore) -> None:
    sync = BlockingSync(store.root)
    committer = make(store, sync)

    async def run() -> None:
        task = asyncio.create_task(deliver(committer, [ALICE], b"in flight\n"))
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
    assert len(files(store, ALICE, "new")) == 1  # committed: the caller only stopped waiting
    assert files(store, ALICE, "tmp") == []


# -- clean-up failures and fail stop -----------------------------------------------------------


def test_a_failing_clean_up_still_answers_every_waiter(store: MailStore) -> None:
    # Every sync fails while the 20 are in flight, whichever batches the thread makes of them.
    sync = FailingSync(store.root, set(range(1, 21)))
    committer = make(store, sync)

    def refuse(path: Path) -> None:
        raise OSError(errno.EIO, "unlink: injected", str(path))

    committer.unlink = refuse

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(
            *(deliver(committer, [ALICE, BOB], f"m{i}\n".encode()) for i in range(20)),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(run())
        assert all(isinstance(r, OSError) for r in results), results
        assert committer.alive
        sync.failing.clear()
        committer.unlink = os.unlink
        kept = asyncio.run(deliver(committer, [ALICE], b"kept\n"))
    finally:
        committer.stop()
    assert kept in files(store, ALICE, "new")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of its own (the test remounts it read-only).

    Skipped only for a user who is not root (the test command and CI run as root); as root a mount
    that fails is a failure, not a skip."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=False)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_volume_fails_deliveries_and_the_thread_serves_on(tmpfs: Path) -> None:
    store = MailStore(tmpfs / "mail", "test.example")
    for user in USERS:
        store.create(user)
    committer = make(store, keys=tmpfs.parent / "keys.sqlite3")
    data = b"Subject: spilled\n\n" + b"x" * 1000 + b"\n"
    fd, spilled = store.open_tmp(ALICE)
    os.write(fd, data)
    os.close(fd)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)

        async def run() -> list[Stored | BaseException]:
            return await asyncio.gather(
                committer.commit([ALICE, BOB], len(data), len(data) + 3, b"", spilled),
                deliver_keyed(committer, [BOB], b"in memory\n", None),
                return_exceptions=True,
            )

        results = asyncio.run(run())
        # The link fails with EROFS and so does the removal of the spilled file: still answered.
        assert [getattr(r, "errno", r) for r in results] == [errno.EROFS, errno.EROFS]
        assert spilled.exists()  # could not be removed (logged); swept at the next start-up
        assert committer.alive
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
        kept = asyncio.run(deliver(committer, [BOB], b"after\n"))
    finally:
        committer.stop()
    assert files(store, BOB, "new") == [kept]


def test_a_fault_outside_disk_errors_stops_the_committer_and_every_delivery_is_answered(
    store: MailStore,
) -> None:
    committer = make(store)

    def broken(source: Path, target: Path) -> None:
        raise RuntimeError("injected: a bug in the delivery thread")

    committer.link = broken

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(
            *(deliver(committer, [ALICE], f"m{i}\n".encode(), f"k{i}") for i in range(10)),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(run())
        assert all(isinstance(r, CommitterStopped) for r in results), results
        assert not committer.alive
        with pytest.raises(CommitterStopped):  # refused at once, not queued for nobody
            asyncio.run(deliver(committer, [ALICE], b"later\n"))
    finally:
        committer.stop()
    assert files(store, ALICE, "new") == []
    assert files(store, ALICE, "tmp") == []


# -- which sync --------------------------------------------------------------------------------


def test_the_kernel_release_decides_the_sync_mode(tmp_path: Path) -> None:
    assert not syncfs_reports_errors("5.7.19-generic")
    assert not syncfs_reports_errors("4.19.0")
    assert not syncfs_reports_errors("weird")
    assert syncfs_reports_errors("5.8.0")
    assert syncfs_reports_errors("6.18.44-fc-v1098")
    assert open_sync(tmp_path, "5.4.0-150-generic") is None
    sync = open_sync(tmp_path, "6.1.0")
    assert isinstance(sync, VolumeSync)
    sync.close()


def test_the_per_file_mode_fsyncs_every_file_and_each_new_directory(store: MailStore) -> None:
    committer = make(store, None)
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    committer.fsync = fsync

    async def run() -> list[str]:
        return await asyncio.gather(
            *(deliver(committer, [ALICE, BOB], f"m{i}\n".encode()) for i in range(30))
        )

    try:
        names = asyncio.run(run())
    finally:
        committer.stop()
    for user in (ALICE, BOB):
        assert files(store, user, "new") == sorted(names)
        assert files(store, user, "tmp") == []
        assert str(store.maildir(user) / "new") in synced
    assert sum("/test.example/alice/tmp/" in path for path in synced) == 30  # each file, as written
    assert synced.count(str(store.maildir(ALICE) / "new")) <= committer.batches


# -- idempotency keys --------------------------------------------------------------------------


def test_a_key_already_stored_is_answered_as_the_first_time(store: MailStore) -> None:
    committer = make(store)

    async def run() -> list[Stored]:
        first = await deliver_keyed(committer, [ALICE, BOB], b"once\n", "tx-1")
        again = await deliver_keyed(committer, [ALICE, BOB], b"once\n", "tx-1")
        together = await asyncio.gather(
            *(deliver_keyed(committer, [CAROL], b"same batch\n", "tx-2") for _ in range(5))
        )
        return [first, again, *together]

    try:
        first, again, *together = asyncio.run(run())
    finally:
        committer.stop()
    assert not first.replayed
    assert again == first._replace(replayed=True)  # the same answer, known to be a replay
    assert files(store, ALICE, "new") == files(store, BOB, "new") == [first.id]
    assert [answer.replayed for answer in together].count(False) == 1  # one stored it
    assert all(
        answer._replace(replayed=False) == together[0]._replace(replayed=False)
        for answer in together
    )
    assert files(store, CAROL, "new") == [together[0].id]


def test_a_key_whose_delivery_failed_may_store_again(store: MailStore) -> None:
    committer = make(store, FailingSync(store.root, {1}))

    async def run() -> tuple[BaseException | Stored, Stored]:
        try:
            failed: BaseException | Stored = await deliver_keyed(
                committer, [ALICE], b"retry me\n", "tx-f"
            )
        except OSError as exc:
            failed = exc
        return failed, await deliver_keyed(committer, [ALICE], b"retry me\n", "tx-f")

    try:
        failed, stored = asyncio.run(run())
    finally:
        committer.stop()
    assert isinstance(failed, OSError)
    assert files(store, ALICE, "new") == [stored.id]


CRASH = """
import os, sys
from pathlib import Path
from mailstore_api.committer import GroupCommitter, VolumeSync
from mailstore_api.db import DeliveryKeys
from mailstore_api.maildir import MailStore
import asyncio

store = MailStore(Path(sys.argv[1]), "test.example")
committer = GroupCommitter(
    store, DeliveryKeys(Path(sys.argv[2]), fsync_commits=False), VolumeSync(store.root), 86400.0
)
links = []

def link(source, target):
    if sys.argv[3] == "after-first-link" and links:
        os._exit(9)  # the process dies between two links, with no clean-up at all
    if sys.argv[3] == "before-links":
        os._exit(9)
    os.link(source, target)
    links.append(target)

committer.link = link
recipients = ["alice@test.example", "bob@test.example"]
asyncio.run(committer.commit(recipients, 6, 7, b"crash\\n", None, key="tx-crash"))
"""


@pytest.mark.parametrize("when", ["after-first-link", "before-links"])
def test_a_crash_in_a_batch_leaves_one_copy_per_recipient_for_the_retry(
    store: MailStore, tmp_path: Path, when: str
) -> None:
    keys = tmp_path / "keys.sqlite3"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, str(store.root), str(keys), when], check=False
    )
    assert crashed.returncode == 9
    store.start_up(0)
    committer = make(store, keys=keys)  # start-up resolves the key in doubt
    try:
        retry = asyncio.run(deliver_keyed(committer, [ALICE, BOB], b"crash\n", "tx-crash"))
    finally:
        committer.stop()
    for user in (ALICE, BOB):  # rolled forward, or stored by the retry: once for each
        assert files(store, user, "new") == [retry.id]
        assert (store.maildir(user) / "new" / retry.id).read_bytes() == b"crash\n"
        assert files(store, user, "tmp") == []


def test_a_settled_key_stays_stored_after_the_message_was_expunged(
    store: MailStore, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.sqlite3"
    committer = make(store, keys=keys)
    try:
        first = asyncio.run(deliver_keyed(committer, [ALICE], b"read and gone\n", "tx-e"))
        store.delete(ALICE, [first.id])
        asyncio.run(deliver_keyed(committer, [BOB], b"another batch\n", "tx-other"))
    finally:
        committer.stop()
    committer = make(store, keys=keys)  # a restart: the first batch was settled by the second
    try:
        again = asyncio.run(deliver_keyed(committer, [ALICE], b"read and gone\n", "tx-e"))
    finally:
        committer.stop()
    assert again == first._replace(replayed=True)
    assert files(store, ALICE, "new") == []
