"""Group commit of deliveries: one thread makes every waiting message durable with two syncs.

A delivery must be durable in ``tmp/`` before it is linked into ``new/``, and its links durable
before the 201. Done one delivery at a time that is two flushes of the device per message, and with
many deliveries at once a worker thread per message, each contending for the GIL with the event
loop. Instead, one thread takes every delivery waiting (up to :data:`MAX_BATCH`) and:

1. writes each in-memory message into a new file in its first recipient's ``tmp/`` (a spilled
   message is already there, its data flushed by its own worker thread) and picks its final name;
2. in ONE SQLite transaction (:class:`~mailstore_api.db.DeliveryKeys`), for the deliveries that
   carry an ``Idempotency-Key``: answers those whose key is already recorded as the first time
   (they write nothing), records the others (key, name, recipients, size, batch number), marks
   the previous batch settled and forgets the keys of deliveries that failed after being recorded;
3. makes the files and those rows durable with one ``syncfs(2)`` of the volume;
4. hard-links each file into every recipient's ``new/`` under its final name;
5. makes all the links durable with a second ``syncfs(2)``;
6. removes the ``tmp/`` names (not synced: a leftover is swept at start-up) and answers every
   delivery of the batch with one wake-up of the event loop.

Per message, the order is the design's durable-delivery rule (file durable, then link, then link durable, then
success). A failure of one message (its Maildir gone, the volume full) fails that message alone; a
failed sync (a write-back error anywhere on the file system since the last call) fails every
message of its batch. A failed message leaves nothing in ``tmp/`` or ``new/``, as far as the file
system lets it remove things: clean-up never raises, it logs what it could not remove.

**Fail stop.** Every delivery handed over is answered, whatever happens. Disk errors fail
messages, as above; anything else raised in the thread (a bug, a broken keys database) stops the
committer: it answers every delivery it holds or that is queued with :class:`CommitterStopped`
(the API's 503, smtp-in's 451), refuses every later one the same way, :attr:`alive` turns false,
which fails ``/healthz`` and ``/readyz``, and ``on_stop`` is called (the server ends itself a
little later, see :mod:`mailstore_api.state`, so that its restart policy starts it again). A
restart repeats the start-up recovery below instead of serving on in an unknown state.

**Which sync.** ``syncfs`` reports a write-back error of the file system only since Linux 5.8
(before, it returned 0 after losing data). At start-up :func:`open_sync` checks the kernel's
release; on an older kernel, or without ``syncfs``, the committer falls back to per-file
``fsync``: each file as it is written, then each ``new/`` directory of the batch once (and the
keys database fsyncs its commits), and logs which mode it runs in. ``syncfs`` flushes every file
of the file system, not just ours: the data volume should not share its file system with heavy
writers of other data (see docs/architecture.md).

**Why a crash cannot duplicate or lose a keyed delivery.** The row of a key is written in step 2,
before the sync of step 3, and every link is made after that sync returned. So a link on disk
implies its key on disk: a message is never stored without its key (which would store it again on
the retry). The other way round, a row may be on disk without its message (crash before step 3,
or before the links of step 4 reached the disk), or with its links in only some of its
recipients' Maildirs. Only the rows of batches after the last *settled* one can be in that state
(a batch's rows are declared settled in the next batch's transaction, once its step 5 is done and
its failures forgotten, so a settled row is always a delivered message, even after the user
expunged it: the retry is still answered as the first time). At start-up, before serving,
:meth:`GroupCommitter` resolves the rows in doubt: a message found in some recipient's ``new/`` or
``cur/`` passed step 3, so it is durable and is linked into the recipients that lack it (rolled
forward, then synced); a message found nowhere was never answered 201 (that needs step 5), so its
row is dropped and the retry stores it. The one imprecision: a recipient who expunged the message
in the milliseconds between its link and a system crash gets it once more. The row commit needs no
fsync of its own (``synchronous=NORMAL``): the ``syncfs`` of step 3 flushes the WAL with the
files, and SQLite's WAL with ``NORMAL`` stays consistent across a power loss (its checkpoints sync
themselves); when the database is on another file system, or in per-file mode, the commit fsyncs.
Keys older than ``DELIVERY_KEY_RETENTION`` seconds are pruned in a batch's transaction (at most
once a minute). Two requests with one key: in one batch the second follows the first (same answer,
same error); in later batches the second finds the first's row (or, when the first failed, no row,
and stores).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mailcommon.atomicfile import write_all
from mailcommon.logging import get_logger

from mailstore_api import metrics
from mailstore_api.db import DeliveryKeys, KeyedDelivery
from mailstore_api.maildir import MailStore, UnknownMailbox, base_name, final_name
from mailstore_api.threads import wait_through_cancel

#: At most this many deliveries per batch (in-memory messages are at most 256 KiB each).
MAX_BATCH = 128
#: Seconds between two prunings of expired keys.
PRUNE_EVERY = 60.0
log = get_logger(__name__)


class CommitterStopped(Exception):
    """The delivery thread has stopped: nothing can be stored until the mailstore restarts."""


class Stored(NamedTuple):
    """What a stored delivery's 201 says."""

    id: str
    recipients: list[str]
    size: int
    replayed: bool = False  # answered from its Idempotency-Key: stored by an earlier request


def syncfs_reports_errors(release: str) -> bool:
    """Whether a kernel of ``release`` (``os.uname().release``) reports write-back errors
    through ``syncfs(2)``: Linux 5.8 or later."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (5, 8)


class VolumeSync:
    """``syncfs(2)`` of the file system holding ``path``: everything written there is durable."""

    def __init__(self, path: Path) -> None:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs  # AttributeError: no syncfs
        syncfs.argtypes = [ctypes.c_int]
        syncfs.restype = ctypes.c_int
        self._syncfs: Callable[[int], int] = syncfs
        # Held open for the process's life: syncfs then reports every write-back error since.
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __call__(self) -> None:
        if self._syncfs(self._fd) != 0:  # ctypes releases the GIL around the call
            code = ctypes.get_errno() or errno.EIO
            raise OSError(code, f"syncfs: {os.strerror(code)}")

    def close(self) -> None:
        os.close(self._fd)


def open_sync(path: Path, release: str | None = None) -> VolumeSync | None:
    """The ``syncfs`` of ``path``'s file system when the kernel reports write-back errors through
    it, else None (per-file ``fsync``); logs the mode chosen."""
    release = os.uname().release if release is None else release
    if syncfs_reports_errors(release):
        try:
            sync = VolumeSync(path)
        except AttributeError:
            log.warning("durability: per-file fsync (no syncfs in the C library)", kernel=release)
            return None
        log.info("durability: syncfs per batch", kernel=release)
        return sync
    log.warning("durability: per-file fsync (syncfs reports errors from Linux 5.8)", kernel=release)
    return None


@dataclass(eq=False)
class Delivery:
    """One message on its way into ``new/`` of each of ``recipients``."""

    recipients: list[str]
    stored: int  # octets as stored (S=)
    crlf: int  # octets with CRLF line ends (W=)
    data: bytes  # the message, to write into a new tmp file, when ``tmp`` is None
    tmp: Path | None  # the message already written (spilled) into this tmp file
    key: str | None  # its Idempotency-Key
    future: asyncio.Future[Stored] = field(repr=False)
    name: str = ""
    links: list[Path] = field(default_factory=list)
    recorded: bool = False  # its key's row is written (forget it if the delivery fails)
    answer: Stored | None = None
    error: BaseException | None = None
    follows: Delivery | None = None  # an earlier delivery of this batch with the same key
    # Raised to the caller unless the key is already recorded (then answered as the first time).
    refusal: Exception | None = None
    received: float | None = None  # an imported message's date: its name's time and its mtime


class GroupCommitter:
    """The delivery thread; :meth:`commit` from the event loop, :meth:`stop` once at shutdown.

    ``sync`` is None in per-file mode (:func:`open_sync`). The system calls that touch the volume
    after a message is written are attributes (``syncfs``, ``fsync``, ``link``, ``unlink``), the
    one place where the tests inject faults into the real thread.
    """

    def __init__(
        self,
        store: MailStore,
        keys: DeliveryKeys,
        sync: VolumeSync | None,
        retention: float,
        *,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_stop = on_stop  # called in the thread once it stopped on a failure
        self._keys = keys
        self._volume = sync
        self._retention = retention
        self.syncfs: Callable[[], None] | None = sync
        self.fsync: Callable[[int], None] = os.fsync
        self.link: Callable[[Path, Path], None] = os.link
        self.unlink: Callable[[Path], None] = os.unlink
        self._queue: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders commit() against stop() and a failure
        self._closed = False
        self.failure: BaseException | None = None  # what stopped the thread
        self._batch = keys.last_batch()
        self._settled = self._batch  # the last batch with keys whose outcome is final
        self._settled_written = self._batch  # ... as the database has it
        self._forget: set[str] = set()  # keys recorded for deliveries that then failed
        self._pruned = 0.0
        self._recover()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self._thread.start()
        self.batches = 0  # batches committed so far: how many syncs the deliveries shared

    @property
    def alive(self) -> bool:
        """The thread serves deliveries (False once it stopped on a failure)."""
        return self.failure is None and self._thread.is_alive()

    async def commit(
        self,
        recipients: list[str],
        stored: int,
        crlf: int,
        data: bytes,
        tmp: Path | None,
        *,
        key: str | None = None,
        refusal: Exception | None = None,
        received: float | None = None,
    ) -> Stored:
        """Make the message durable in every recipient's ``new/`` (once per ``key``); what its
        201 says. From then on the committer owns ``tmp`` (it removes it in every case). Raises
        what failed it (:class:`~mailstore_api.maildir.UnknownMailbox`, ``OSError``,
        :class:`CommitterStopped`). A cancelled caller still waits for the outcome, then the
        cancellation is re-raised.

        With ``refusal`` (and ``key``), nothing is stored: the answer is the first delivery's if
        ``key`` is recorded, else ``refusal`` is raised (a retry of a delivery that passed a
        check this one fails, a quota, is still answered as the first time). ``received``: the
        date of an imported message, for its name and modification time (else now)."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        delivery = Delivery(
            recipients, stored, crlf, data, tmp, key, future, refusal=refusal, received=received
        )
        with self._lock:
            if self.failure is not None or self._closed:
                delivery.tmp = None
                if tmp is not None:
                    self._remove([tmp])
                raise CommitterStopped("the delivery thread has stopped")
            self._queue.put(delivery)
        return await wait_through_cancel(future)

    def stop(self) -> None:
        """Commit what is queued, end the thread, close the volume and the keys database."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        if self._volume is not None:
            self._volume.close()
        self._keys.close()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        batch: list[Delivery] = []
        try:
            while batch := self._next_batch():
                self._commit(batch)
                self.batches += 1
                _answer(batch)
                batch = []
        except BaseException as exc:  # fail stop: answer everyone, then end
            self._fail_stop(exc, batch)

    def _next_batch(self) -> list[Delivery]:
        """The deliveries waiting (blocks for the first); empty once :meth:`stop` was called."""
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # stop(): nothing can follow it; commit these, then end
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _fail_stop(self, exc: BaseException, batch: list[Delivery]) -> None:
        log.critical(
            "the delivery thread stopped: deliveries are refused until a restart",
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        stopped = CommitterStopped("the delivery thread has stopped")
        with self._lock:
            self.failure = exc
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    batch.append(item)
        for delivery in batch:
            if delivery.answer is None and delivery.error is None:
                self._discard(delivery, stopped)
        _answer(batch)
        if self._on_stop is not None:
            self._on_stop()

    def _commit(self, batch: list[Delivery]) -> None:
        metrics.COMMIT_BATCH_SIZE.observe(len(batch))
        written = [d for d in batch if d.refusal is not None or self._write(d)]
        fresh = self._record(written)
        durable = self._sync_files(fresh)
        linked = self._sync_links([d for d in durable if self._link(d)])
        for delivery in linked:
            delivery.answer = Stored(delivery.name, delivery.recipients, delivery.stored)
            delivery.links = []
        self._settled = self._batch  # this batch's outcome is final (recorded in the next one)
        for delivery in batch:
            if delivery.follows is not None:
                first = delivery.follows.answer
                delivery.answer = first._replace(replayed=True) if first is not None else None
                delivery.error = delivery.follows.error
        self._remove([d.tmp for d in batch if d.tmp is not None])
        for delivery in batch:
            delivery.tmp = None

    def _write(self, delivery: Delivery) -> bool:
        base = base_name(self._store.host, delivery.received)
        delivery.name = final_name(base, delivery.stored, delivery.crlf)
        try:
            if delivery.tmp is None:
                fd, delivery.tmp = self._store.open_tmp(delivery.recipients[0])
                try:
                    write_all(fd, delivery.data)
                    if self.syncfs is None:
                        self.fsync(fd)
                finally:
                    os.close(fd)
            if delivery.received is not None:
                os.utime(delivery.tmp, (delivery.received, delivery.received))
        except (OSError, UnknownMailbox) as exc:
            self._discard(delivery, exc)
            return False
        return True

    def _record(self, written: list[Delivery]) -> list[Delivery]:
        """Step 2: the deliveries of ``written`` still to link (the others are answered)."""
        keyed = [d for d in written if d.key is not None]
        if not keyed and not self._forget:
            return written
        now = time.time()
        first: dict[str, Delivery] = {}
        for delivery in keyed:
            assert delivery.key is not None
            if delivery.key in first:
                delivery.follows = first[delivery.key]
            else:
                first[delivery.key] = delivery
        forget = set(self._forget)
        with self._keys.batch() as tx:
            if forget:
                tx.forget(forget)
            if self._settled > self._settled_written:
                tx.settle(self._settled)
            known = tx.lookup(list(first))
            new = [d for k, d in first.items() if k not in known and d.refusal is None]
            if new:
                self._batch += 1
                tx.record(
                    [KeyedDelivery(d.key or "", d.name, d.recipients, d.stored) for d in new],
                    self._batch,
                    now,
                )
            if now - self._pruned >= PRUNE_EVERY:
                pruned = tx.prune(now - self._retention)
                self._pruned = now
                if pruned:
                    log.info("delivery keys pruned", keys=pruned)
        self._forget -= forget
        self._settled_written = self._settled
        for delivery in new:
            delivery.recorded = True
        for key, row in known.items():
            first[key].answer = Stored(row.name, row.recipients, row.size, replayed=True)
        for delivery in first.values():
            if delivery.answer is None and delivery.refusal is not None:
                delivery.error = delivery.refusal
        return [d for d in written if d.answer is None and d.follows is None and d.error is None]

    def _link(self, delivery: Delivery) -> bool:
        assert delivery.tmp is not None
        try:
            for user in delivery.recipients:
                target = self._store.maildir(user) / "new" / delivery.name
                try:
                    self.link(delivery.tmp, target)
                except FileNotFoundError as exc:
                    raise UnknownMailbox(user) from exc
                delivery.links.append(target)
        except (OSError, UnknownMailbox) as exc:
            self._discard(delivery, exc)
            return False
        return True

    def _sync_files(self, live: list[Delivery]) -> list[Delivery]:
        """Step 3 (per-file mode: each file was fsynced as written, the rows at their commit)."""
        return self._synced(live, self.syncfs) if self.syncfs is not None else live

    def _sync_links(self, live: list[Delivery]) -> list[Delivery]:
        """Step 5; per-file mode: each ``new/`` of the batch once, failing the deliveries in it."""
        if self.syncfs is not None:
            return self._synced(live, self.syncfs)
        failed: dict[Path, OSError] = {}
        for directory in dict.fromkeys(link.parent for d in live for link in d.links):
            try:
                self._fsync_dir(directory)
            except OSError as exc:
                log.error("directory sync failed", directory=str(directory), error=str(exc))
                failed[directory] = exc
        kept: list[Delivery] = []
        for delivery in live:
            error = next((failed[p.parent] for p in delivery.links if p.parent in failed), None)
            if error is None:
                kept.append(delivery)
            else:
                self._discard(delivery, error)
        return kept

    def _synced(self, live: list[Delivery], sync: Callable[[], None]) -> list[Delivery]:
        """``live`` once one sync made it durable; none, every one failed, when the sync fails."""
        if not live:
            return live
        try:
            sync()
        except OSError as exc:
            log.error("volume sync failed", error=str(exc), deliveries=len(live))
            for delivery in live:
                self._discard(delivery, exc)
            return []
        return live

    def _fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

    def _discard(self, delivery: Delivery, exc: BaseException) -> None:
        """Fail ``delivery`` with ``exc`` and remove what it left on the volume (never raises)."""
        delivery.error = exc
        self._remove([*delivery.links, *([delivery.tmp] if delivery.tmp else [])])
        delivery.links = []
        delivery.tmp = None
        if delivery.recorded and delivery.key is not None:
            self._forget.add(delivery.key)
            delivery.recorded = False

    def _remove(self, paths: list[Path]) -> None:
        """Unlink ``paths``; one already gone is no error, any other error is logged."""
        for path in paths:
            try:
                self.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("could not remove a file of a delivery", path=str(path), error=str(exc))

    # -- start-up --------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Resolve the keys in doubt after a crash (see the module docstring), before serving."""
        doubtful = self._keys.in_doubt()
        if not doubtful:
            return
        gone: list[str] = []
        dirs: set[Path] = set()
        for row in doubtful:
            found = {user: self._find(user, row.name) for user in row.recipients}
            source = next((path for path in found.values() if path is not None), None)
            if source is None:
                gone.append(row.key)
                continue
            for user, path in found.items():
                if path is None and self._store.exists(user):
                    target = self._store.maildir(user) / "new" / row.name
                    self.link(source, target)
                    dirs.add(target.parent)
        if self.syncfs is not None:
            self.syncfs()
        else:
            for directory in dirs:
                self._fsync_dir(directory)
        with self._keys.batch() as tx:
            tx.forget(gone)
            tx.settle(self._batch)
        log.warning(
            "deliveries in doubt after a crash resolved",
            completed=len(doubtful) - len(gone),
            dropped=len(gone),
            links_added=len(dirs),
        )

    def _find(self, user: str, name: str) -> Path | None:
        try:
            return self._store.find(user, name)
        except UnknownMailbox:
            return None


def _answer(batch: list[Delivery]) -> None:
    """From the committer thread: have the event loop settle ``batch`` (one wake-up)."""
    if not batch:
        return
    try:
        batch[0].future.get_loop().call_soon_threadsafe(_settle, batch)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.warning("deliveries answered after the event loop closed", deliveries=len(batch))
    except Exception:  # never let the answer kill the thread that gives it
        log.exception("deliveries could not be answered", deliveries=len(batch))


def _settle(batch: list[Delivery]) -> None:
    """On the event loop: answer every delivery of ``batch``."""
    for delivery in batch:
        if delivery.future.done():
            continue
        if delivery.error is not None:
            delivery.future.set_exception(delivery.error)
        elif delivery.answer is not None:
            delivery.future.set_result(delivery.answer)
        else:  # cannot happen: every path sets one; answer rather than leave it waiting
            delivery.future.set_exception(CommitterStopped("the delivery was not settled"))
