"""A remote MX for the tests: aiosmtpd (a real SMTP server, in a thread of the test process) on
one loopback address, offering STARTTLS, keeping what it accepted, and answering as told."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    sender: str
    recipients: list[str]
    content: bytes
    tls: bool

    @property
    def message_id(self) -> str:
        parsed = email.message_from_bytes(self.content, policy=email.policy.compat32)
        return str(parsed["Message-ID"])


@dataclass
class Behaviour:
    """What the receiver does: ``tempfail`` answers 451 at DATA to the first N attempts of each
    message (by Message-ID); ``reject_rcpt`` answers 550 at RCPT; ``drop`` takes the message
    (keeps it: it arrived) and closes the connection instead of answering, for the first N
    attempts; ``pause`` seconds at DATA before the 250 (so deliveries are under way at once)."""

    tempfail: int = 0
    reject_rcpt: bool = False
    drop: int = 0
    pause: float = 0.0


@dataclass
class Handler:
    behaviour: Behaviour
    received: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.behaviour.reject_rcpt:
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        got = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            bytes(envelope.original_content or b""),
            session.ssl is not None,
        )
        with self.lock:
            self.attempts[got.message_id] += 1
            attempt = self.attempts[got.message_id]
        if attempt <= self.behaviour.tempfail:
            return "451 4.3.0 Try again later (test receiver)"
        if self.behaviour.pause:
            await asyncio.sleep(self.behaviour.pause)  # the timing is the behaviour: in flight
        with self.lock:
            self.received.append(got)
        if attempt <= self.behaviour.drop:
            server.transport.abort()  # the message is here, its 250 never leaves
            return "250 2.0.0 never sent"
        return "250 2.0.0 Ok: stored"


class Receiver:
    """An SMTP server on ``address:port`` (STARTTLS with ``tls``), in a thread."""

    def __init__(
        self, address: str, port: int, tls: ssl.SSLContext, behaviour: Behaviour | None = None
    ) -> None:
        self.address = address
        self.handler = Handler(behaviour or Behaviour())
        self.controller = Controller(
            self.handler,
            hostname=address,
            port=port,
            server_hostname="mx.remote.test",
            tls_context=tls,
            require_starttls=False,
        )

    def start(self) -> Receiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)
