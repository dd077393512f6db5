"""Group commit of deliveries: one thread makes every waiting message durable with two syncfs(2).

A delivery must be durable in ``tmp/`` before it is linked into ``new/``, and its links durable
before the 201. Done one delivery at a time that is two flushes of the device per message, and with
many deliveries at once a worker thread per message, each contending for the GIL with the event
loop. Instead, one thread takes every delivery waiting (up to :data:`MAX_BATCH`) and:

1. writes each in-memory message into a new file in its first recipient's ``tmp/`` (a spilled
   message is already there, its data flushed by its own worker thread);
2. makes all those files durable with one ``syncfs(2)`` of the volume;
3. hard-links each into every recipient's ``new/`` under its final name;
4. makes all the links durable with a second ``syncfs(2)``;
5. removes the ``tmp/`` names and answers every delivery of the batch with one wake-up of the
   event loop.

Per message, the order is the one of DESIGN.md (file durable, then link, then link durable, then
success); ``syncfs`` covers the file's ``fsync`` and the directory's. A failure of one message
(its Maildir gone, the volume full) fails that message alone; a failed ``syncfs`` (a write-back
error anywhere on the file system since the last call) fails every message of its batch. A failed
message leaves nothing in ``tmp/`` or ``new/``.

``syncfs`` flushes every file of the file system, not just ours: the data volume should not share
its file system with heavy writers of other data (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailcommon.logging import get_logger

from mailstore_api.maildir import MailStore, unlink_all, write_all
from mailstore_api.threads import wait_through_cancel

#: At most this many deliveries per batch (in-memory messages are at most 256 KiB each).
MAX_BATCH = 128
log = get_logger(__name__)


class VolumeSync:
    """``syncfs(2)`` of the file system holding ``path``: everything written there is durable."""

    def __init__(self, path: Path) -> None:
        try:
            syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except AttributeError:
            raise RuntimeError("syncfs(2) is not available: the mailstore needs Linux") from None
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


@dataclass(eq=False)
class Delivery:
    """One message on its way into ``new/`` of each of ``recipients``."""

    recipients: list[str]
    stored: int  # octets as stored (S=)
    crlf: int  # octets with CRLF line ends (W=)
    data: bytes  # the message, to write into a new tmp file, when ``tmp`` is None
    tmp: Path | None  # the message already written (spilled) into this tmp file
    future: asyncio.Future[str] = field(repr=False)
    links: list[Path] = field(default_factory=list)
    name: str = ""
    error: BaseException | None = None
    durable: bool = False

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` and remove whatever this delivery left on the volume."""
        self.error = exc
        unlink_all([*self.links, *([self.tmp] if self.tmp else [])])
        self.links = []
        self.tmp = None


class GroupCommitter:
    """The delivery thread; :meth:`commit` from the event loop, :meth:`stop` once at shutdown."""

    def __init__(self, store: MailStore, sync: VolumeSync) -> None:
        self._store = store
        self._sync = sync
        self._queue: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self._thread.start()
        self.batches = 0  # batches committed so far: how many syncs the deliveries shared

    async def commit(
        self, recipients: list[str], stored: int, crlf: int, data: bytes, tmp: Path | None
    ) -> str:
        """Make the message durable in every recipient's ``new/``; its id. From then on the
        committer owns ``tmp`` (it removes it in every case). Raises what failed it
        (:class:`~mailstore_api.maildir.UnknownMailbox`, ``OSError``). A cancelled caller still
        waits for the outcome, then the cancellation is re-raised."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.put(Delivery(recipients, stored, crlf, data, tmp, future))
        return await wait_through_cancel(future)

    def stop(self) -> None:
        """Commit what is queued, end the thread, close the volume."""
        self._queue.put(None)
        self._thread.join()
        self._sync.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._commit(batch)
            except BaseException as exc:  # a bug, not a disk error: fail the batch, keep serving
                log.exception("delivery batch failed", deliveries=len(batch))
                for delivery in batch:
                    if delivery.error is None and not delivery.durable:
                        delivery.fail(exc)
            self.batches += 1
            _answer(batch)
        self._refuse_the_rest()

    def _refuse_the_rest(self) -> None:
        """Deliveries queued after :meth:`stop` (none, once the server has drained) fail."""
        while True:
            try:
                delivery = self._queue.get_nowait()
            except queue.Empty:
                return
            if delivery is not None:
                delivery.fail(RuntimeError("the mailstore is stopping"))
                _answer([delivery])

    def _commit(self, batch: list[Delivery]) -> None:
        written = self._synced([d for d in batch if self._write(d)])
        linked = self._synced([d for d in written if self._link(d)])
        unlink_all([d.tmp for d in linked if d.tmp])  # not synced: a leftover is swept at start-up
        for delivery in linked:
            delivery.tmp = None
            delivery.links = []
            delivery.durable = True

    def _write(self, delivery: Delivery) -> bool:
        if delivery.tmp is not None:
            return True
        try:
            fd, delivery.tmp = self._store.open_tmp(delivery.recipients[0])
            try:
                write_all(fd, delivery.data)
            finally:
                os.close(fd)
        except Exception as exc:
            delivery.fail(exc)
            return False
        return True

    def _link(self, delivery: Delivery) -> bool:
        assert delivery.tmp is not None
        try:
            delivery.name, delivery.links = self._store.link_into_new(
                delivery.tmp, delivery.recipients, delivery.stored, delivery.crlf
            )
        except Exception as exc:
            delivery.fail(exc)
            return False
        return True

    def _synced(self, live: list[Delivery]) -> list[Delivery]:
        """``live`` once one sync made it durable; none, every one failed, when the sync fails."""
        if not live:
            return live
        try:
            self._sync()
        except OSError as exc:
            log.error("volume sync failed", error=str(exc), deliveries=len(live))
            for delivery in live:
                delivery.fail(exc)
            return []
        return live


def _answer(batch: list[Delivery]) -> None:
    """From the committer thread: have the event loop settle ``batch`` (one wake-up)."""
    try:
        batch[0].future.get_loop().call_soon_threadsafe(_settle, batch)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.warning("deliveries answered after the event loop closed", deliveries=len(batch))


def _settle(batch: list[Delivery]) -> None:
    """On the event loop: answer every delivery of ``batch``."""
    for delivery in batch:
        if delivery.future.done():
            continue
        if delivery.error is not None:
            delivery.future.set_exception(delivery.error)
        else:
            delivery.future.set_result(delivery.name)
