"""Typed async client for the mailstore's internal API (``/internal/v1``), used by smtp-in and pop3.

Every failure is mapped to one exception class, so the front ends can choose a protocol reply
without looking at HTTP: :class:`MailstoreUnavailable` means "try again later" (4xx in SMTP,
``[SYS/TEMP]`` in POP3); the other :class:`MailstoreError` subclasses are definite answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from mailcommon.transport import LeanTransport, RawResponse

INTERNAL = "/internal/v1"
#: The batch read's limits (the mailstore refuses more): ids per call, stored octets per call.
BATCH_MAX_IDS = 256
BATCH_MAX_BYTES = 1024 * 1024
SIZES_HEADER = "x-message-sizes"


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
    """The lease is not the current holder of the maildrop, or its fence is stale (409).

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
class Delivery:
    """A stored message: its id (the same for every recipient) and its stored size."""

    id: str
    recipients: list[str]
    size: int


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


def _unreachable(exc: httpx.HTTPError) -> MailstoreUnavailable:
    return MailstoreUnavailable(0, "unreachable", f"{type(exc).__name__}: {exc}", {})


def _segment(name: str) -> str:
    """``name`` as one path segment, whatever it contains (a RCPT local part may hold anything)."""
    return quote(name, safe="")


class MailstoreClient:
    """One connection pool to the mailstore; share one instance per process.

    Calls go through :meth:`LeanTransport.request` (bytes in, the response read whole); httpx's
    client, over the same pool, serves the one that streams its body (:meth:`open_message`).
    """

    def __init__(
        self,
        base_url: str,
        service_token: str,
        timeout: float = 30.0,
        max_connections: int = 8,
    ) -> None:
        origin = httpx.URL(base_url.rstrip("/"))
        self._origin = origin
        self._prefix = origin.path.rstrip("/") + INTERNAL
        self._auth = b"Bearer " + service_token.encode()
        self._timeouts: dict[str, float | None] = {
            "connect": min(timeout, 5.0),
            "read": timeout,
            "write": timeout,
            "pool": timeout,
        }
        self._transport = LeanTransport(max_connections)
        self._http = httpx.AsyncClient(
            base_url=str(origin) + INTERNAL,
            headers={"Authorization": self._auth.decode()},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=self._transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, json_body: object = None, content: bytes = b""
    ) -> RawResponse:
        headers = [(b"Authorization", self._auth)]
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            headers.append((b"Content-Type", b"application/json"))
        elif content:
            headers.append((b"Content-Type", b"message/rfc822"))
        try:
            response = await self._transport.request(
                self._origin,
                method,
                self._prefix + path,
                headers=headers,
                body=content,
                timeouts=self._timeouts,
            )
        except httpx.HTTPError as exc:  # connect errors, timeouts, protocol errors
            raise _unreachable(exc) from exc
        if response.status >= 400:
            raise _error_from(response.status, response.body)
        return response

    @staticmethod
    def _json(response: RawResponse) -> Any:
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

    def _verified(self, response: RawResponse) -> Verified | None:
        body = self._json(response)
        if not body.get("valid"):
            return None
        tag = body.get("credential_tag")
        return Verified(str(body["username"]), str(tag) if tag is not None else None)

    async def recipient_exists(self, username: str) -> bool:
        """Whether a mailbox ``username`` exists. Raises MailstoreUnavailable when unknowable."""
        try:
            await self._request("GET", f"/recipients/{_segment(username)}")
        except NotFound:
            return False
        return True

    async def deliver(self, recipients: list[str], message: bytes) -> Delivery:
        """Store ``message`` once for all ``recipients``; returns when it is durably on disk."""
        path = "/deliveries?" + urlencode([("recipient", r) for r in recipients])
        body = self._json(await self._request("POST", path, content=message))
        return Delivery(id=body["id"], recipients=list(body["recipients"]), size=int(body["size"]))

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
            sizes = [int(v) for v in response.headers[SIZES_HEADER.encode()].split(b",")]
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

    @asynccontextmanager
    async def open_message(self, username: str, message_id: str) -> AsyncIterator[httpx.Response]:
        """Stream one message as stored (LF line ends): iterate ``response.aiter_bytes()``."""
        url = f"/mailboxes/{_segment(username)}/messages/{_segment(message_id)}"
        try:
            async with self._http.stream("GET", url) as response:
                if response.is_error:
                    await response.aread()
                    raise _error_from(response.status_code, response.content)
                yield response
        except httpx.HTTPError as exc:
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
