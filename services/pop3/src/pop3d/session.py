"""Per-connection state: kept small, since thousands of idle sessions may be logged in.

The snapshot is three parallel lists (ids, sizes, stored sizes) fixed at login; deletion marks are
a bytearray of one flag per message. Nothing else of the mailbox is held, but for a short while the
small messages prefetched for sequential RETRs (:mod:`pop3d.prefetch`, bounded per process).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailcommon.client import SnapshotEntry
from mailcommon.locks import Lease
from mailcommon.streams import drain_within

from pop3d.protocol import reply

if TYPE_CHECKING:
    from pop3d.context import Context
    from pop3d.prefetch import Prefetch


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


class Snapshot:
    """The maildrop as it was at login: message n is ``ids[n-1]`` of ``sizes[n-1]`` octets
    (W, CRLF form), ``stored[n-1]`` as stored (S; None from a mailstore that does not say)."""

    __slots__ = ("deleted", "ids", "sizes", "stored")

    def __init__(self, entries: list[SnapshotEntry]) -> None:
        self.ids: list[str] = [e.id for e in entries]
        self.sizes: list[int] = [e.size for e in entries]
        self.stored: list[int | None] = [e.stored_size for e in entries]
        self.deleted = bytearray(len(entries))

    def __len__(self) -> int:
        return len(self.ids)

    def is_deleted(self, n: int) -> bool:
        return bool(self.deleted[n - 1])

    def mark(self, n: int) -> None:
        self.deleted[n - 1] = 1

    def reset(self) -> None:
        self.deleted = bytearray(len(self.ids))

    def live(self) -> list[int]:
        """Numbers of the messages not marked as deleted."""
        return [n for n in range(1, len(self.ids) + 1) if not self.deleted[n - 1]]

    def stat(self) -> tuple[int, int]:
        """Count and total size of the messages not marked as deleted."""
        count = total = 0
        for flag, size in zip(self.deleted, self.sizes, strict=True):
            if not flag:
                count += 1
                total += size
        return count, total

    def marked_ids(self) -> list[str]:
        return [i for i, flag in zip(self.ids, self.deleted, strict=True) if flag]


@dataclass(slots=True)
class SessionStats:
    """What the session's log line reports."""

    retrieved: int = 0
    prefetched: int = 0  # RETR/TOP answered from the prefetch
    batches: int = 0  # batch reads from the mailstore
    deleted: int = 0
    octets_sent: int = 0
    cached_login: bool = False  # the login was known from the login cache
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class LeaseState:
    """A held maildrop lock and what the renewer has learnt about it."""

    lease: Lease
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False


class AbortSession(Exception):
    """End the connection now, without UPDATE (e.g. the mailstore failed mid-RETR)."""


class Session:
    """One client connection: its streams, its state, and what it is allowed to do."""

    __slots__ = (
        "bad_commands",
        "closing",
        "commands",
        "ctx",
        "lease",
        "peer_ip",
        "peer_port",
        "prefetch",
        "reader",
        "result",
        "sid",
        "snapshot",
        "state",
        "stats",
        "timestamp",
        "tls",
        "tls_port",
        "user",
        "user_hint",
        "writer",
    )

    def __init__(
        self,
        ctx: Context,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer_ip: str,
        peer_port: int,
        *,
        tls_port: bool,
    ) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.peer_ip = peer_ip
        self.peer_port = peer_port
        self.tls_port = tls_port  # the implicit-TLS listener (no STLS there)
        self.tls = tls_port
        self.sid = ctx.new_session_id()
        self.timestamp = ctx.new_timestamp()
        self.state = State.AUTHORIZATION
        self.user_hint: bytes | None = None  # from USER, until PASS
        self.user: str | None = None
        self.snapshot: Snapshot | None = None
        self.lease: LeaseState | None = None
        self.prefetch: Prefetch | None = None
        self.bad_commands = 0
        self.commands = 0
        self.closing = False
        self.result = "disconnected"
        self.stats = SessionStats()

    @property
    def plaintext_ok(self) -> bool:
        """Whether passwords may be sent on this connection now."""
        return self.tls or self.ctx.settings.pop3_allow_plaintext_auth

    @property
    def timeout(self) -> float:
        s = self.ctx.settings
        return s.pop3_auth_timeout if self.state is State.AUTHORIZATION else s.pop3_idle_timeout

    async def drain(self) -> None:
        """Wait for the socket to take what was written, but not forever (slow readers)."""
        await drain_within(self.writer, self.ctx.settings.pop3_idle_timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.stats.octets_sent += len(data)
        await self.drain()

    async def ok(self, text: str = "") -> None:
        await self.send(reply(True, text))

    async def err(self, text: str) -> None:
        await self.send(reply(False, text))

    async def bad(self, text: str) -> None:
        """``-ERR`` for a protocol error; too many of them close the connection."""
        self.bad_commands += 1
        if self.bad_commands >= self.ctx.settings.pop3_max_bad_commands:
            self.closing = True
            self.result = "too_many_bad_commands"
            await self.err(f"{text}; too many bad commands, closing connection")
        else:
            await self.err(text)
