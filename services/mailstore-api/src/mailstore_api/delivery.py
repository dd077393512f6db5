"""One delivery: the streamed body converted to LF, then made durable by the group committer.

Small messages are held in memory until the end and handed whole to
:class:`~mailstore_api.committer.GroupCommitter`, which writes, syncs and links them with the
other deliveries of its batch; larger ones are spilled to a tmp file every ``SPILL`` octets (so
memory per delivery stays bounded whatever the message size) and handed over as that file. A
delivery with an ``Idempotency-Key`` already stored is answered as the first time (the committer
looks the key up in its batch, see :mod:`mailstore_api.committer`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mailcommon.atomicfile import write_all
from mailcommon.logging import get_logger

from mailstore_api import accounts, metrics
from mailstore_api.committer import CommitterStopped, GroupCommitter, Stored
from mailstore_api.errors import ApiError
from mailstore_api.maildir import LineEndings, MailStore, UnknownMailbox, is_disk_full
from mailstore_api.state import State
from mailstore_api.threads import in_thread
from mailstore_api.usage import fits

SPILL = 256 * 1024
MAX_RECIPIENTS = 1000
#: The longest ``Idempotency-Key`` (smtp-in's transaction ids are far shorter).
MAX_KEY = 200
log = get_logger(__name__)


def check_recipients(state: State, given: list[str]) -> list[str]:
    """Distinct account addresses (a bare name: the primary domain); 404 ``unknown_user``
    (listing them) if any is not an account."""
    if not given:
        raise ApiError(422, "validation_error", "query.recipient: at least one is required")
    if len(given) > MAX_RECIPIENTS:
        raise ApiError(422, "too_many_recipients", f"at most {MAX_RECIPIENTS} recipients")
    names: dict[str, None] = {}
    unknown: list[str] = []
    for name in given:
        address = state.directory.account_of(name)
        if address is None:
            unknown.append(name)
        else:
            names[address] = None
    if unknown:
        raise ApiError(404, "unknown_user", "no such user", unknown=unknown)
    return list(names)


def quota_refusal(state: State, names: list[str], size: int) -> ApiError | None:
    """507 ``quota_exceeded`` when a message of ``size`` stored octets fits none of the
    recipients' quotas, else None. When it fits some, it is stored for all (docs/architecture.md,
    "Quotas": one SMTP reply per DATA cannot refuse some recipients only)."""
    for name in names:
        if fits(state.usage.of(name), accounts.quota(state, name), size):
            return None
    return ApiError(
        507, "quota_exceeded", "the message would exceed the mailbox's quota", accounts=names
    )


def check_idempotency_key(key: str | None) -> None:
    """422 ``invalid_idempotency_key`` unless ``key`` is None or 1-200 printable ASCII chars."""
    if key is None:
        return
    if not 0 < len(key) <= MAX_KEY or not (key.isascii() and key.isprintable()):
        raise ApiError(
            422,
            "invalid_idempotency_key",
            f"Idempotency-Key: 1 to {MAX_KEY} printable ASCII characters",
        )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "message_too_large", f"the message exceeds {limit} octets", limit=limit)


async def store_delivery(
    state: State,
    recipients: list[str],
    content_length: str | None,
    chunks: AsyncIterator[bytes],
    *,
    idempotency_key: str | None = None,
    received: float | None = None,
) -> dict[str, Any]:
    """Stream ``chunks`` into every recipient's Maildir; the 201 body once durably on disk.

    With ``idempotency_key`` (the ``Idempotency-Key`` header), a key already stored within
    ``DELIVERY_KEY_RETENTION`` is not stored again: the answer is the first one's 201 body.
    ``received``: an imported message's date (seconds since the epoch), else now.
    Raises :class:`ApiError` (404, 413, 422, 503 when the delivery thread has stopped, 507); a
    client that goes away mid-body propagates from ``chunks``. Nothing is left behind in tmp/ on
    any failure. Counted in :mod:`mailstore_api.metrics`.
    """
    started = time.perf_counter()
    try:
        stored = await _store(
            state,
            recipients,
            content_length,
            chunks,
            idempotency_key=idempotency_key,
            received=received,
        )
    except ApiError as exc:
        metrics.delivery(exc.code)
        raise
    except BaseException:
        metrics.delivery("failed")  # the client went away, or an error answered 500
        raise
    if stored.replayed:
        metrics.delivery("replayed")
    else:
        metrics.delivery("stored")
        metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
        state.usage.added(stored.recipients, stored.size)
        state.search.added(stored.recipients, stored.id)
        state.events.delivered(stored.recipients, stored.id)
    return {"id": stored.id, "recipients": stored.recipients, "size": stored.size}


async def _store(
    state: State,
    recipients: list[str],
    content_length: str | None,
    chunks: AsyncIterator[bytes],
    *,
    idempotency_key: str | None,
    received: float | None,
) -> Stored:
    """:func:`store_delivery` but for the counting and the usage."""
    check_idempotency_key(idempotency_key)
    names = check_recipients(state, recipients)
    limit = state.settings.max_message_size
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(limit)
    writer = DeliveryWriter(state.store, names, state.io, state.committer)
    committed = False
    try:
        async for chunk in chunks:
            if writer.received + len(chunk) > limit:
                raise _too_large(limit)
            await writer.feed(chunk)
        writer.finish()
        refusal = quota_refusal(state, names, writer.stored)
        if refusal is not None and idempotency_key is None:
            raise refusal
        stored = await writer.commit(idempotency_key, refusal, received)
        committed = True
    except UnknownMailbox as exc:
        raise ApiError(404, "unknown_user", "no such user") from exc
    except CommitterStopped as exc:
        raise ApiError(
            503, "delivery_unavailable", "the mailstore cannot store mail until it restarts"
        ) from exc
    except OSError as exc:
        if is_disk_full(exc):
            log.error("volume full", error=str(exc))
            raise ApiError(507, "insufficient_storage", "the mail volume is full") from exc
        raise
    finally:
        if not committed:
            await writer.abort()
    return stored


class DeliveryWriter:
    """Collects one message for ``recipients``; :meth:`commit` makes it durable, :meth:`abort` not."""

    def __init__(
        self,
        store: MailStore,
        recipients: list[str],
        executor: ThreadPoolExecutor,
        committer: GroupCommitter,
    ):
        self._store = store
        self._recipients = recipients
        self._executor = executor
        self._committer = committer
        self._lines = LineEndings()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._tmp: Path | None = None
        self.received = 0

    async def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        data = self._lines.convert(chunk)
        if data:
            self._buffer.append(data)
            self._buffered += len(data)
        if self._buffered >= SPILL:
            await in_thread(self._executor, self._spill)

    def _take_buffered(self) -> bytes:
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    def _spill(self) -> None:
        if self._fd is None:
            self._fd, self._tmp = self._store.open_tmp(self._recipients[0])
        write_all(self._fd, self._take_buffered())

    def _finish_spill(self) -> None:
        """Write the rest and flush the data here, in this delivery's own worker thread, so the
        committer's shared syncfs does not make a whole batch wait for megabytes of one message."""
        self._spill()
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def finish(self) -> None:
        """The end of the body: the tail of the line-end conversion (:attr:`stored` is final)."""
        tail = self._lines.finish()
        if tail:
            self._buffer.append(tail)

    @property
    def stored(self) -> int:
        """Octets as stored (LF line ends)."""
        return self._lines.stored

    async def commit(
        self, key: str | None, refusal: Exception | None = None, received: float | None = None
    ) -> Stored:
        """Hand the finished message to the committer: durable in every recipient's new/ (once
        per ``key``; with ``refusal``, answered only when ``key`` is recorded); its 201."""
        if self._fd is not None:
            await in_thread(self._executor, self._finish_spill)
        tmp, self._tmp = self._tmp, None  # the committer removes it from here on
        data = b"" if tmp is not None else self._take_buffered()
        stored = self._lines.stored
        return await self._committer.commit(
            self._recipients,
            stored,
            stored + self._lines.lfs,
            data,
            tmp,
            key=key,
            refusal=refusal,
            received=received,
        )

    async def abort(self) -> None:
        """Remove the tmp file, if any; safe to call at any point and more than once."""
        if self._fd is None and self._tmp is None:
            return
        await in_thread(self._executor, self._abort)

    def _abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
