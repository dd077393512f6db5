"""Typed async client for the mailstore's internal API (``/internal/v1``), used by smtp-in and pop3
(and, for the outbound queue, by smtp-submit and smtp-out).

Every failure is mapped to one exception class, so the front ends can choose a protocol reply
without looking at HTTP: :class:`MailstoreUnavailable` means "try again later" (4xx in SMTP,
``[SYS/TEMP]`` in POP3); the other :class:`MailstoreError` subclasses are definite answers.

HTTP is aiohttp's client (one ``ClientSession`` per process). It was chosen by measurement
(``bench/http_client_bench.py``, figures in ``bench/RESULTS.md``): about 150-200 µs of CPU per
call against uvicorn on loopback, like h11 under a pool of our own, where httpx costs 700-1,100 µs
(httpcore's pool rescans every connection, through anyio, on each state change). What the front
ends rely on, each pinned by a test over real sockets (``tests/test_client_http.py``): interim
1xx replies are skipped; a reply that arrives while the body is still being sent (an early 413)
is the reply; only idempotent methods are resent after a pooled connection turns out closed, so a
POST never is (aiohttp's ``IDEMPOTENT_METHODS``); and this module reads no response body past
:data:`MAX_RESPONSE` octets except one that is streamed (:meth:`MailstoreClient.open_message`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

INTERNAL = "/internal/v1"
#: The batch read's limits (the mailstore refuses more): ids per call, stored octets per call.
BATCH_MAX_IDS = 256
BATCH_MAX_BYTES = 1024 * 1024
SIZES_HEADER = "x-message-sizes"
#: The longest response body read whole: a full batch, plus room for its JSON neighbours.
MAX_RESPONSE = BATCH_MAX_BYTES + 64 * 1024
#: Most octets one step of a streamed message yields.
STREAM_CHUNK = 64 * 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Seconds an idle pooled connection is kept: below uvicorn's 5 s, so that the client, not the
#: server, ends an idle connection (a POST sent as the server closes it fails; it is not resent).
KEEPALIVE = 4.0


class MailstoreError(Exception):
    """The mailstore answered with an error (``status`` and the JSON error ``code``)."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class MailstoreUnavailable(MailstoreError):
    """The mailstore could not be reached, timed out, or failed (5xx): a temporary condition."""


class NotFound(MailstoreError):
    """The user or message does not exist (404)."""


class MessageTooLarge(MailstoreError):
    """The message is larger than the mailstore accepts (413)."""


class InsufficientStorage(MailstoreError):
    """The volume is full (507); temporary from the sender's point of view."""


class LockConflict(MailstoreError):
    """The lease is not the current holder of the maildrop, or its fence is stale (409); for the
    outbound queue: ``stale_lease`` (the entry's lease is another or expired) or
    ``recipient_settled``.

    ``highest_fence`` is the highest fencing number the mailstore has seen for the mailbox.
    """

    @property
    def highest_fence(self) -> int:
        return int(self.detail.get("highest_fence", 0))


_BY_STATUS: dict[int, type[MailstoreError]] = {
    404: NotFound,
    409: LockConflict,
    413: MessageTooLarge,
    507: InsufficientStorage,
}


@dataclass(frozen=True)
class SnapshotEntry:
    """One message of a mailbox snapshot: its id (the UIDL), its size with CRLF line ends (W)
    and its size as stored (S; None from a mailstore that does not report it)."""

    id: str
    size: int
    stored_size: int | None = None


@dataclass(frozen=True)
class Verified:
    """Credentials the mailstore accepted: the canonical user name, and the account's credential
    tag (changes whenever its password does; None from a mailstore that does not report it)."""

    username: str
    credential_tag: str | None = None


@dataclass(frozen=True)
class MailboxSnapshot:
    """A mailbox's messages in order, and the account's credential tag at that moment."""

    entries: list[SnapshotEntry]
    credential_tag: str | None = None


@dataclass(frozen=True)
class Recipient:
    """The accounts an address delivers to; ``limited`` when some have a quota (then the answer
    depends on their usage and must not be reused)."""

    accounts: list[str]
    limited: bool


@dataclass(frozen=True)
class Delivery:
    """A stored message: its id (the same for every recipient) and its stored size."""

    id: str
    recipients: list[str]
    size: int


@dataclass(frozen=True)
class Enqueued:
    """A message in the outbound queue: its entry id, its recipients, its size as received."""

    id: str
    recipients: list[str]
    size: int


@dataclass(frozen=True)
class QueuedRecipient:
    address: str
    attempts: int
    last_reply: str | None


@dataclass(frozen=True)
class QueueClaim:
    """A queue entry leased to this worker: report on its ``recipients`` with ``lease`` before
    ``lease_expires`` (seconds since the epoch). ``sender`` is '' for the null sender."""

    id: str
    sender: str
    account: str | None
    size: int
    created_at: float
    attempts: int
    recipients: list[QueuedRecipient]
    lease: str
    lease_expires: float


@dataclass(frozen=True)
class RecipientResult:
    """One recipient's outcome: ``status`` delivered, deferred or failed, with the SMTP reply."""

    recipient: str
    status: str
    reply: str = ""


@dataclass(frozen=True)
class ReportOutcome:
    """After a report: whether the entry is gone (every recipient settled), and who is pending."""

    removed: bool
    pending: list[str]


def _error_from(status: int, body: bytes) -> MailstoreError:
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        detail = {k: v for k, v in error.items() if k not in {"code", "message"}}
    except (ValueError, KeyError, TypeError):
        code, message, detail = "unexpected", body[:200].decode(errors="replace"), {}
    if status >= 500 and status != 507:
        return MailstoreUnavailable(status, code, message, detail)
    return _BY_STATUS.get(status, MailstoreError)(status, code, message, detail)


def _unreachable(exc: BaseException) -> MailstoreUnavailable:
    return MailstoreUnavailable(0, "unreachable", f"{type(exc).__name__}: {exc}", {})


#: What aiohttp raises when the mailstore cannot be reached, times out or breaks the protocol.
_HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)


def _dropped_after_sending(exc: BaseException | None) -> bool:
    """The connection failed after it was open, not for want of one or of time: the mailstore
    may or may not have seen (and acted on) the request."""
    if isinstance(exc, aiohttp.ClientConnectorError | TimeoutError):
        return False  # never connected (nothing was sent), or slow: retrying adds load
    return isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
    )


class TooLong(Exception):
    """A response body over the limit the caller set."""


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refused (:class:`TooLong`) past ``limit`` octets however it is framed:
    by its ``Content-Length`` before reading, chunked or close-delimited as it arrives."""
    if response.content_length is not None:
        if response.content_length > limit:
            raise TooLong(f"{response.content_length} octets announced, at most {limit} read")
        return await response.read()
    parts: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_any():
        total += len(chunk)
        if total > limit:
            raise TooLong(f"over {limit} octets without a length")
        parts.append(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class Response:
    """A response read whole: status, headers and body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class MessageStream:
    """One stored message being received (what :meth:`MailstoreClient.open_message` yields)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.headers = response.headers

    async def aread(self) -> bytes:
        """The whole message; more than :data:`MAX_RESPONSE` octets is MailstoreUnavailable."""
        try:
            return await read_bounded(self._response, MAX_RESPONSE)
        except TooLong as exc:
            raise MailstoreUnavailable(200, "too_long", str(exc), {}) from exc

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The message in pieces of at most :data:`STREAM_CHUNK` octets, read as asked for."""
        async for chunk in self._response.content.iter_chunked(STREAM_CHUNK):
            yield chunk


def _segment(name: str) -> str:
    """``name`` as one path segment, whatever it contains (a RCPT local part may hold anything)."""
    return quote(name, safe="")


class MailstoreClient:
    """One connection pool to the mailstore; share one instance per process.

    The aiohttp session is made on the first call, inside the running event loop (aiohttp binds
    it to that loop), so the client can be built before the loop starts.
    """

    def __init__(
        self,
        base_url: str,
        service_token: str,
        timeout: float = 30.0,
        max_connections: int = 8,
    ) -> None:
        self._base = base_url.rstrip("/") + INTERNAL
        self._headers = {"Authorization": f"Bearer {service_token}"}
        self._max_connections = max_connections
        # ``connect`` covers the wait for a pooled connection as well as opening one.
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, connect=timeout, sock_connect=min(timeout, 5.0)
        )
        # A stream lasts as long as its reader needs; each read still has ``timeout``.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=min(timeout, 5.0), sock_read=timeout
        )
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=KEEPALIVE
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _url(self, path: str) -> URL:
        return URL(self._base + path, encoded=True)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Response:
        sent = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            sent["Content-Type"] = "application/json"
        elif content:
            sent["Content-Type"] = "message/rfc822"
        try:
            async with self._session().request(
                method,
                self._url(path),
                data=content or None,
                headers=sent,
                timeout=self._timeout,
            ) as response:
                try:
                    body = await read_bounded(response, MAX_RESPONSE)
                except TooLong as exc:
                    response.close()  # the rest is never read: the connection cannot be reused
                    raise MailstoreUnavailable(response.status, "too_long", str(exc), {}) from exc
        except _HTTP_ERRORS as exc:
            raise _unreachable(exc) from exc
        if response.status >= 400:
            raise _error_from(response.status, body)
        return Response(response.status, response.headers, body)

    @staticmethod
    def _json(response: Response) -> Any:
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise MailstoreUnavailable(response.status, "bad_response", "not JSON", {}) from exc

    async def verify_password(self, username: str, password: str) -> Verified | None:
        """The account when the credentials are right, else None."""
        response = await self._request(
            "POST", "/auth", json_body={"username": username, "password": password}
        )
        return self._verified(response)

    async def verify_apop(self, username: str, timestamp: str, digest: str) -> Verified | None:
        """The account when ``digest`` is MD5(timestamp + APOP secret), else None."""
        response = await self._request(
            "POST",
            "/auth/apop",
            json_body={"username": username, "timestamp": timestamp, "digest": digest},
        )
        return self._verified(response)

    def _verified(self, response: Response) -> Verified | None:
        body = self._json(response)
        if not body.get("valid"):
            return None
        tag = body.get("credential_tag")
        return Verified(str(body["username"]), str(tag) if tag is not None else None)

    async def recipient(self, address: str, size: int | None = None) -> Recipient:
        """Who receives mail at ``address`` (``local@domain``), for a message of the declared
        ``size``. Raises :class:`NotFound` (code ``unknown_domain`` or ``unknown_user``),
        :class:`InsufficientStorage` (``mailbox_full``, ``quota_exceeded``) and
        :class:`MailstoreUnavailable` (``no_postmaster`` among others)."""
        path = f"/recipients/{_segment(address)}"
        if size is not None:
            path += f"?size={size}"
        body = self._json(await self._request("GET", path))
        return Recipient([str(a) for a in body["accounts"]], bool(body.get("limited", True)))

    async def deliver(
        self, recipients: list[str], message: bytes, idempotency_key: str | None = None
    ) -> Delivery:
        """Store ``message`` once for all ``recipients``; returns when it is durably on disk.

        With ``idempotency_key`` (smtp-in passes its transaction id) the request carries
        ``Idempotency-Key``, and one whose connection dropped after it was sent (the mailstore
        may have stored the message, or not) is sent once more, here and only here. That is safe
        because the mailstore stores a delivery with a key it has already stored only once and
        answers the repeat as it answered the first. Without a key nothing is resent: a POST is
        never replayed by the HTTP layer, since a second copy in every mailbox is worse than a
        451 that makes the sender try again. Timeouts are not retried (the mailstore is slow,
        not gone), nor is a connection that never opened (a request that was never sent).
        """
        path = "/deliveries?" + urlencode([("recipient", r) for r in recipients])
        body = self._json(await self._post_message(path, message, idempotency_key))
        return Delivery(id=body["id"], recipients=list(body["recipients"]), size=int(body["size"]))

    async def _post_message(
        self, path: str, message: bytes, idempotency_key: str | None
    ) -> Response:
        """POST ``message``; with a key, sent once more if the connection dropped after sending
        (see :meth:`deliver`)."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key is not None else None
        try:
            return await self._request("POST", path, content=message, headers=headers)
        except MailstoreUnavailable as exc:
            if idempotency_key is None or not _dropped_after_sending(exc.__cause__):
                raise
            return await self._request("POST", path, content=message, headers=headers)

    # -- the outbound queue ----------------------------------------------------------------------

    async def enqueue(
        self,
        sender: str,
        recipients: list[str],
        message: bytes,
        *,
        account: str | None = None,
        idempotency_key: str | None = None,
    ) -> Enqueued:
        """Queue ``message`` (sent byte for byte as given: CRLF line ends) for remote
        ``recipients`` from envelope ``sender`` ('' for <>); returns once it is durable. The
        key is handled as in :meth:`deliver` (the same key twice is stored once)."""
        query = [("sender", sender), *(("recipient", r) for r in recipients)]
        if account is not None:
            query.append(("account", account))
        response = await self._post_message("/queue?" + urlencode(query), message, idempotency_key)
        body = self._json(response)
        return Enqueued(id=body["id"], recipients=list(body["recipients"]), size=int(body["size"]))

    async def claim(
        self, worker: str, limit: int = 10, lease_seconds: float = 300.0
    ) -> list[QueueClaim]:
        """Lease up to ``limit`` queue entries due now (none leased by another live lease)."""
        response = await self._request(
            "POST",
            "/queue/claim",
            json_body={"worker": worker, "limit": limit, "lease_seconds": lease_seconds},
        )
        return [
            QueueClaim(
                id=e["id"],
                sender=e["sender"],
                account=e["account"],
                size=int(e["size"]),
                created_at=float(e["created_at"]),
                attempts=int(e["attempts"]),
                recipients=[
                    QueuedRecipient(r["address"], int(r["attempts"]), r["last_reply"])
                    for r in e["recipients"]
                ],
                lease=e["lease"],
                lease_expires=float(e["lease_expires"]),
            )
            for e in self._json(response)["entries"]
        ]

    def open_queued(self, entry_id: str) -> AbstractAsyncContextManager[MessageStream]:
        """A queue entry's message as enqueued, streamed like :meth:`open_message`."""
        return self._stream(f"/queue/{_segment(entry_id)}/message")

    async def report(
        self, entry_id: str, lease: str, results: list[RecipientResult], *, release: bool = True
    ) -> ReportOutcome:
        """Record delivery results under ``lease``; :class:`LockConflict` (``stale_lease``)
        when it is no longer the entry's, :class:`NotFound` when the entry is gone."""
        response = await self._request(
            "POST",
            f"/queue/{_segment(entry_id)}/report",
            json_body={
                "lease": lease,
                "results": [
                    {"recipient": r.recipient, "status": r.status, "reply": r.reply}
                    for r in results
                ],
                "release": release,
            },
        )
        body = self._json(response)
        return ReportOutcome(
            removed=bool(body["removed"]),
            pending=[r["address"] for r in body["recipients"] if r["state"] == "pending"],
        )

    async def sender_addresses(self, username: str) -> list[str]:
        """The addresses the account ``username`` may send as (its own first, then the aliases
        that deliver to it), lower-case with the domain in A-labels. Raises :class:`NotFound`
        (``unknown_user``) and :class:`MailstoreUnavailable`."""
        path = f"/accounts/{_segment(username)}/sender-addresses"
        body = self._json(await self._request("GET", path))
        return [str(a) for a in body["addresses"]]

    async def snapshot(self, username: str, lock_token: str, fence: int) -> MailboxSnapshot:
        """The mailbox's messages in order, registering ``fence`` as the newest holder's."""
        response = await self._request(
            "POST",
            f"/mailboxes/{_segment(username)}/snapshot",
            json_body={"lock_token": lock_token, "fence": fence},
        )
        body = self._json(response)
        entries = [
            SnapshotEntry(
                m["id"],
                int(m["size"]),
                int(m["stored_size"]) if m.get("stored_size") is not None else None,
            )
            for m in body["messages"]
        ]
        tag = body.get("credential_tag")
        return MailboxSnapshot(entries, str(tag) if tag is not None else None)

    async def fetch_batch(self, username: str, message_ids: list[str]) -> list[bytes]:
        """Several messages as stored (LF line ends), in one call, in the order asked.

        At most :data:`BATCH_MAX_IDS` ids and :data:`BATCH_MAX_BYTES` stored octets in all
        (413 :class:`MessageTooLarge` beyond). :class:`NotFound` when any id is gone.
        """
        response = await self._request(
            "POST",
            f"/mailboxes/{_segment(username)}/messages/batch",
            json_body={"ids": message_ids},
        )
        body = response.body
        try:
            sizes = [int(v) for v in response.headers[SIZES_HEADER].split(",")]
        except (KeyError, ValueError):
            sizes = []
        if len(sizes) != len(message_ids) or sum(sizes) != len(body) or min(sizes) < 0:
            raise MailstoreUnavailable(
                response.status, "bad_batch", "batch sizes do not match the body", {}
            )
        out: list[bytes] = []
        pos = 0
        for size in sizes:
            out.append(body[pos : pos + size])
            pos += size
        return out

    def open_message(
        self, username: str, message_id: str
    ) -> AbstractAsyncContextManager[MessageStream]:
        """One message as stored (LF line ends): ``await stream.aread()`` for all of it, or
        iterate ``stream.aiter_raw()``. The connection is held until the block ends."""
        return self._stream(f"/mailboxes/{_segment(username)}/messages/{_segment(message_id)}")

    @asynccontextmanager
    async def _stream(self, path: str) -> AsyncIterator[MessageStream]:
        try:
            async with self._session().get(
                self._url(path), timeout=self._stream_timeout
            ) as response:
                if response.status >= 400:
                    try:
                        body = await read_bounded(response, MAX_RESPONSE)
                    except TooLong:
                        response.close()
                        body = b""
                    raise _error_from(response.status, body)
                yield MessageStream(response)
        except _HTTP_ERRORS as exc:
            raise _unreachable(exc) from exc

    async def expunge(
        self, username: str, message_ids: list[str], lock_token: str, fence: int
    ) -> list[str]:
        """Delete ``message_ids`` under the lease; returns the ids now gone (already-gone count)."""
        response = await self._request(
            "POST",
            f"/mailboxes/{_segment(username)}/expunge",
            json_body={"ids": message_ids, "lock_token": lock_token, "fence": fence},
        )
        body = self._json(response)
        return list(body["deleted"]) + list(body["already_gone"])
