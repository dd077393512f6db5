"""Per-connection state: kept small, since thousands of idle sessions may be logged in.

Nothing of the mailbox is held but the snapshot (:mod:`pop3d.snapshot`) and, for a short while, the
small messages prefetched for sequential RETRs (:mod:`pop3d.prefetch`, bounded per process).
"""

from __future__ import annotations

import asyncio

from mailcommon.streams import drain_within

from pop3d.context import Context
from pop3d.leases import LeaseState
from pop3d.prefetch import Prefetcher
from pop3d.protocol import reply
from pop3d.snapshot import Snapshot
from pop3d.state import State
from pop3d.stats import SessionStats


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
        self.stats = SessionStats()
        self.prefetch = Prefetcher(
            ctx.client, ctx.prefetch_budget, ctx.settings.pop3_prefetch_bytes, self.stats
        )
        self.bad_commands = 0
        self.commands = 0
        self.closing = False
        self.result = "disconnected"

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
