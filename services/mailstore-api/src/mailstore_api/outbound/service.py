"""What the queue's API calls do: enqueue (smtp-submit), claim / message / report (smtp-out),
list / show / retry / drop (the admin API), and the DSNs that settle with a failure send.

Back-off: a recipient deferred for the n-th time is due again after ``QUEUE_RETRY_BASE`` *
2^(n-1) seconds, at most ``QUEUE_RETRY_MAX`` (5 min, 10, 20, 40, 80, then every 2 h), and never
after the entry's deadline (its creation + ``QUEUE_LIFETIME``). At the deadline what is still
pending fails as expired (Status 4.4.7): when a deferral is reported after it, and at every
claim, which first sweeps the entries past their deadline that no live lease holds.

Leases: a claim gives each entry a new random token valid ``lease_seconds``; no claim hands the
entry out while it lives, and a report must present it while it lives (else 409
``stale_lease``). So a worker that died or stalled past its lease cannot overwrite what a newer
claim's worker reports. Reports and claims are serialised in this process (one lock) between
their read and their write, the lease being checked again in the write's transaction.

Bounces: recipients that fail (a permanent reply, or expiry) are reported to the envelope
sender in one DSN per report, delivered through :func:`~mailstore_api.delivery.store_delivery`
when the sender is an address of this server (an account, an alias, a +tag), never to the null
sender; the first deferral after ``QUEUE_DELAY_NOTICE`` sends a delay notice, once per entry.
Each DSN carries an ``Idempotency-Key`` made of the entry, the action and the recipients, so
a report retried after a crash stores it once. The DSN goes in before the state is written: a
crash between the two leaves the report to be made again (the worker's retry, or the next
lease's), whose DSN is then a replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from mailcommon.addresses import normalize_domain, split_address
from mailcommon.atomicfile import write_all
from mailcommon.logging import get_logger
from starlette.responses import Response

from mailstore_api import metrics
from mailstore_api.delivery import MAX_RECIPIENTS, SPILL, check_idempotency_key, store_delivery
from mailstore_api.directory import NoPostmaster, UnknownAddress, UnknownDomain
from mailstore_api.errors import ApiError
from mailstore_api.maildir import is_disk_full
from mailstore_api.outbound import dsn
from mailstore_api.outbound.models import (
    Claimed,
    ClaimedEntry,
    ClaimedRecipient,
    ClaimRequest,
    Enqueued,
    QueueEntry,
    RecipientState,
    Reported,
    ReportRequest,
)
from mailstore_api.outbound.store import (
    DELIVERED,
    ENTRY_ID,
    FAILED,
    PENDING,
    EntryRow,
    RecipientRow,
    StaleLease,
    UnknownEntry,
    Update,
    new_id,
)
from mailstore_api.state import State
from mailstore_api.streaming import message_response

log = get_logger(__name__)
MAX_ADDRESS = 320
_LOCK = asyncio.Lock()  # orders claims, reports and sweeps of this process


def _unknown_entry() -> ApiError:
    return ApiError(404, "unknown_entry", "no such queue entry")


def check_id(entry_id: str) -> str:
    """404 ``unknown_entry`` for anything that cannot be an entry id (no path tricks)."""
    if not ENTRY_ID.fullmatch(entry_id):
        raise _unknown_entry()
    return entry_id


def _address(value: str, where: str) -> str:
    """An envelope address (``<>`` stripped): printable ASCII local part, a domain name."""
    address = value.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    parts = split_address(address)
    domain = normalize_domain(parts[1]) if parts else None
    if (
        parts is None
        or domain is None
        or len(address) > MAX_ADDRESS
        or not (parts[0].isascii() and parts[0].isprintable())
        or any(c in parts[0] for c in ' <>"')
    ):
        raise ApiError(422, "invalid_address", f"{where}: {value!r} is not a mail address")
    return f"{parts[0]}@{domain}"


def _sender(value: str) -> str:
    return "" if value.strip() in ("", "<>") else _address(value, "query.sender")


def _recipients(given: list[str]) -> list[str]:
    if not given:
        raise ApiError(422, "validation_error", "query.recipient: at least one is required")
    if len(given) > MAX_RECIPIENTS:
        raise ApiError(422, "too_many_recipients", f"at most {MAX_RECIPIENTS} recipients")
    found: dict[str, str] = {}
    for value in given:
        address = _address(value, "query.recipient")
        found.setdefault(address.lower(), address)
    return list(found.values())


def backoff(settings: Any, attempts: int) -> float:
    """Seconds until the next attempt after the ``attempts``-th deferral."""
    base, most = settings.queue_retry_base, settings.queue_retry_max
    return float(min(base * 2 ** min(max(attempts - 1, 0), 40), most))


# -- enqueue -------------------------------------------------------------------------------------


async def enqueue(
    state: State,
    *,
    sender: str,
    recipients: list[str],
    account: str | None,
    content_length: str | None,
    chunks: AsyncIterator[bytes],
    key: str | None,
) -> tuple[Enqueued, bool]:
    """Store the message for ``recipients``: durable (file, directory, rows) on return; its 201
    body and whether it is a replay of ``key``. 413, 422, 404 ``unknown_account``, 507."""
    check_idempotency_key(key)
    sender = _sender(sender)
    addresses = _recipients(recipients)
    if account is not None:
        canonical = state.directory.account_of(account)
        if canonical is None:
            raise ApiError(404, "unknown_account", "no such account", account=account)
        account = canonical
    limit = state.settings.max_message_size
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(limit)
    queue = state.queue
    now = time.time()
    entry_id = new_id(now)
    outcome: list[tuple[dict[str, Any], bool]] = []
    fd = -1
    try:
        fd = await state.run_io(queue.create_file, entry_id)
        size = await _write_body(state, fd, chunks, limit)
        fd, synced = -1, fd
        await state.run_io(queue.finish_file, synced)
        row = EntryRow(
            entry_id, sender, account, size, now, now, 0, None, None, None, False,
            tuple(RecipientRow(i, a, PENDING, 0, now, None) for i, a in enumerate(addresses)),
        )  # fmt: skip
        first = Enqueued(id=entry_id, recipients=addresses, size=size).model_dump()
        retention = state.settings.delivery_key_retention

        def commit() -> None:  # the outcome is kept even when the caller is cancelled meanwhile
            outcome.append(queue.insert(row, key, first, retention))

        await state.run_io(commit)
    except OSError as exc:
        if is_disk_full(exc):
            log.error("volume full", error=str(exc))
            raise ApiError(507, "insufficient_storage", "the mail volume is full") from exc
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        if not outcome or outcome[0][1]:
            await state.run_io(queue.remove_file, entry_id)
    answer, replayed = outcome[0]
    metrics.queue_enqueued("replayed" if replayed else "stored")
    if not replayed:
        metrics.QUEUE_ENTRIES.inc()
    return Enqueued.model_validate(answer), replayed


async def _write_body(state: State, fd: int, chunks: AsyncIterator[bytes], limit: int) -> int:
    """Write the body to ``fd`` (in worker threads, every ``SPILL`` octets); its size."""
    size = 0
    buffer: list[bytes] = []
    buffered = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        buffer.append(chunk)
        buffered += len(chunk)
        if buffered >= SPILL:
            await state.run_io(write_all, fd, b"".join(buffer))
            buffer, buffered = [], 0
    if size == 0:
        raise ApiError(422, "empty_message", "the message is empty")
    await state.run_io(write_all, fd, b"".join(buffer))
    return size


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "message_too_large", f"the message exceeds {limit} octets", limit=limit)


# -- claim, message, report ----------------------------------------------------------------------


async def claim(state: State, request: ClaimRequest) -> Claimed:
    """Lease up to ``limit`` due entries (after sweeping the expired ones)."""
    async with _LOCK:
        await _expire(state)
        now = time.time()
        rows = await state.run_io(
            state.queue.claim,
            request.worker,
            request.limit,
            request.lease_seconds,
            now,
            now - state.settings.queue_lifetime,
        )
    return Claimed(
        entries=[
            ClaimedEntry(
                id=row.id,
                sender=row.sender,
                account=row.account,
                size=row.size,
                created_at=row.created_at,
                attempts=row.claims,
                recipients=[
                    ClaimedRecipient(
                        address=r.address, attempts=r.attempts, last_reply=r.last_reply
                    )
                    for r in row.recipients
                ],
                lease=row.lease_token or "",
                lease_expires=row.lease_until or now,
            )
            for row in rows
        ]
    )


async def message(state: State, entry_id: str) -> Response:
    """The entry's message, byte for byte as enqueued, streamed; 404 ``unknown_entry``."""
    check_id(entry_id)
    if await state.run_io(state.queue.get, entry_id) is None:
        raise _unknown_entry()
    try:
        return await message_response(state, state.queue.path(entry_id), "message/rfc822")
    except ApiError as exc:  # removed in between
        raise _unknown_entry() from exc


def _stale() -> ApiError:
    return ApiError(
        409, "stale_lease", "the lease is not this entry's current one, or it has expired"
    )


Outcome = tuple[dict[int, Update], list[dsn.DsnRecipient], list[dsn.DsnRecipient], list[str]]


def _outcome(settings: Any, entry: EntryRow, request: ReportRequest, now: float) -> Outcome:
    """A report's updates by position, the recipients failed and deferred, each result's name
    for the counter; 422 / 409 for a recipient that is not pending in the entry."""
    deadline = entry.created_at + settings.queue_lifetime
    by_address = {r.address.lower(): r for r in entry.recipients}
    updates: dict[int, Update] = {}
    failed: list[dsn.DsnRecipient] = []
    deferred: list[dsn.DsnRecipient] = []
    results: list[str] = []
    for result in request.results:
        name = result.recipient.strip().removeprefix("<").removesuffix(">").lower()
        row = by_address.get(name)
        if row is None:
            raise ApiError(
                422, "unknown_recipient", "not a recipient of this entry",
                recipient=result.recipient,
            )  # fmt: skip
        if row.position in updates:
            raise ApiError(
                422, "duplicate_recipient", "a recipient reported twice",
                recipient=result.recipient,
            )  # fmt: skip
        if row.state != PENDING:
            raise ApiError(
                409, "recipient_settled", "this recipient is already settled",
                recipient=row.address, state=row.state,
            )  # fmt: skip
        attempts, reply = row.attempts + 1, result.reply or None
        status: str = result.status
        if result.status == "delivered":
            update = Update(row.position, DELIVERED, attempts, row.next_attempt, reply)
        elif result.status == "failed":
            update = Update(row.position, FAILED, attempts, row.next_attempt, reply)
            failed.append(dsn.DsnRecipient(row.address, reply))
        elif now >= deadline:
            update = Update(row.position, FAILED, attempts, row.next_attempt, reply)
            failed.append(dsn.DsnRecipient(row.address, reply, expired=True))
            status = "expired"
        else:
            due = min(now + backoff(settings, attempts), deadline)
            update = Update(row.position, PENDING, attempts, due, reply)
            deferred.append(dsn.DsnRecipient(row.address, reply))
        updates[row.position] = update
        results.append(status)
    return updates, failed, deferred, results


async def report(state: State, entry_id: str, request: ReportRequest) -> Reported:
    """Record the results of an attempt under its lease (see the module docstring)."""
    check_id(entry_id)
    settings = state.settings
    async with _LOCK:
        now = time.time()
        entry = await state.run_io(state.queue.get, entry_id)
        if entry is None:
            raise _unknown_entry()
        if entry.lease_token != request.lease or not entry.leased(now):
            raise _stale()
        deadline = entry.created_at + settings.queue_lifetime
        outcome = _outcome(settings, entry, request, now)
        updates, failed, deferred, results = outcome
        delay_notice = bool(
            deferred
            and not entry.delay_notified
            and now - entry.created_at >= settings.queue_delay_notice
        )
        await _notify(state, entry, dsn.FAILED, failed)
        if delay_notice:
            await _notify(state, entry, dsn.DELAYED, deferred, retry_until=deadline)
        try:
            removed = await state.run_io(
                lambda: state.queue.apply(
                    entry_id,
                    request.lease,
                    list(updates.values()),
                    release=request.release,
                    delay_notified=delay_notice,
                    now=now,
                )
            )
        except UnknownEntry as exc:
            raise _unknown_entry() from exc
        except StaleLease as exc:
            raise _stale() from exc
    for status in results:
        metrics.queue_result(status)
    if removed:
        metrics.QUEUE_ENTRIES.dec()
    return Reported(
        id=entry_id,
        removed=removed,
        recipients=[_recipient_state(updates.get(r.position), r) for r in entry.recipients],
    )


def _recipient_state(update: Update | None, row: RecipientRow) -> RecipientState:
    state, attempts, due, reply = (
        (update.state, update.attempts, update.next_attempt, update.last_reply)
        if update is not None
        else (row.state, row.attempts, row.next_attempt, row.last_reply)
    )
    return RecipientState(
        address=row.address,
        state=state,
        attempts=attempts,
        next_attempt=due if state == PENDING else None,
        last_reply=reply,
    )


async def _expire(state: State) -> None:
    """Fail (with a DSN) what is pending in the entries past their deadline; remove them."""
    now = time.time()
    for entry in await state.run_io(state.queue.expired, now, now - state.settings.queue_lifetime):
        pending = entry.pending()
        await _notify(
            state,
            entry,
            dsn.FAILED,
            [dsn.DsnRecipient(r.address, r.last_reply, expired=True) for r in pending],
        )
        updates = [
            Update(r.position, FAILED, r.attempts, r.next_attempt, r.last_reply) for r in pending
        ]
        try:
            await state.run_io(
                lambda e=entry, u=updates: state.queue.apply(
                    e.id, None, u, release=True, delay_notified=False, now=now
                )
            )
        except UnknownEntry:
            continue  # dropped meanwhile
        for _ in pending:
            metrics.queue_result("expired")
        metrics.QUEUE_ENTRIES.dec()
        log.info("queue entry expired", entry=entry.id, recipients=len(pending))


async def _notify(
    state: State,
    entry: EntryRow,
    action: str,
    recipients: list[dsn.DsnRecipient],
    retry_until: float | None = None,
) -> None:
    """Deliver a DSN about ``recipients`` to the entry's sender if it is local (never to <>)."""
    if not recipients or not entry.sender:
        return
    try:
        _, accounts = state.directory.resolve(entry.sender)
    except (UnknownDomain, UnknownAddress, NoPostmaster):
        log.info("no DSN: the sender is not local", entry=entry.id, action=action)
        return
    head = await state.run_io(state.queue.head, entry.id)
    data = dsn.build_dsn(
        action=action,
        to=entry.sender,
        reporting_mta=state.settings.mail_hostname,
        queue_id=entry.id,
        arrival=entry.created_at,
        recipients=recipients,
        original_headers=head,
        retry_until=retry_until,
    )
    names = ",".join(sorted(r.address for r in recipients))
    key = f"queue-dsn:{entry.id}:{action}:{hashlib.sha256(names.encode()).hexdigest()[:16]}"

    async def body() -> AsyncIterator[bytes]:
        yield data

    try:
        await store_delivery(state, accounts, str(len(data)), body(), idempotency_key=key)
    except ApiError as exc:  # a full mailbox: the DSN is lost, the queue goes on
        log.warning("DSN not stored", entry=entry.id, action=action, code=exc.code)
        return
    log.info("DSN delivered", entry=entry.id, action=action, recipients=len(recipients))


# -- admin ---------------------------------------------------------------------------------------


def view(state: State, row: EntryRow, now: float | None = None) -> QueueEntry:
    now = time.time() if now is None else now
    leased = row.leased(now)
    return QueueEntry(
        id=row.id,
        sender=row.sender,
        account=row.account,
        size=row.size,
        created_at=row.created_at,
        expires_at=row.created_at + state.settings.queue_lifetime,
        next_attempt=row.next_attempt,
        attempts=row.claims,
        leased_by=row.lease_worker if leased else None,
        lease_expires=row.lease_until if leased else None,
        delay_notified=row.delay_notified,
        recipients=[_recipient_state(None, r) for r in row.recipients],
    )


async def show(state: State, entry_id: str) -> QueueEntry:
    check_id(entry_id)
    row = await state.run_io(state.queue.get, entry_id)
    if row is None:
        raise _unknown_entry()
    return view(state, row)


async def retry(state: State, entry_id: str) -> QueueEntry:
    """Make the entry's pending recipients due now (a live lease still holds it until it ends)."""
    check_id(entry_id)
    if not await state.run_io(state.queue.retry, entry_id, time.time()):
        raise _unknown_entry()
    return await show(state, entry_id)


async def drop(state: State, entry_id: str) -> None:
    """Remove the entry without a DSN (an operator's decision); a worker's report then gets 404."""
    check_id(entry_id)
    async with _LOCK:
        if not await state.run_io(state.queue.drop, entry_id):
            raise _unknown_entry()
    metrics.QUEUE_ENTRIES.dec()
    log.info("queue entry dropped", entry=entry_id)
