"""Policy and delivery: the aiosmtpd handler of submission (``handle_EHLO``/``MAIL``/``RCPT``/``DATA``).

The protocol side (AUTH, STARTTLS, reply codes) lives in :mod:`smtp_submit.protocol`. Here: no
AUTH, no mail; MAIL FROM and ``From:`` must be the account's (:mod:`smtp_submit.senders`); the
per-account limits; remote recipients (accepted in :func:`smtp_submit.outbound.remote_recipient`)
put in the mailstore's outbound queue, then local ones delivered to the mailstore as smtp-in does
(one upload for all of them), both before the 250 and both under the idempotency key of
:func:`smtp_submit.outbound.submission_key`.

Order: the enqueue first, then the local delivery. A failed enqueue is a 451 with nothing stored.
A local delivery that fails after the enqueue is a 451 too, and the queue entry stays (it is
durable, and smtp-out sends it): the client retries, and for a message with its own Message-ID
the retry's enqueue is answered with the first entry (same key), so the remote recipients get
one copy and the local ones get theirs now. A message without Message-ID is keyed by its
transaction: after such a 451 a retry reaches the remote recipients a second time (logged as
``result=local_failed_after_enqueue``).
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import time
from typing import Any

from aiosmtpd.smtp import Envelope, Session
from mailauth.headers import header_from_addresses
from mailcommon.addresses import normalize_domain, split_address
from mailcommon.client import (
    Delivery,
    InsufficientStorage,
    MailstoreClient,
    MailstoreError,
    MailstoreUnavailable,
    NotFound,
)
from mailcommon.logging import get_logger
from mailcommon.smtpdelivery import Deliveries, failure_reply
from mailcommon.smtptrace import protocol_name
from redis.exceptions import RedisError

from smtp_submit import metrics, senders
from smtp_submit.limits import HourlyLimit
from smtp_submit.outbound import remote_recipient, submission_key
from smtp_submit.settings import SubmitSettings

log = get_logger(__name__)

EXTRA_EHLO_KEYWORDS = ("PIPELINING", "ENHANCEDSTATUSCODES")
REDIS_ERRORS = (RedisError, OSError)
AUTH_REQUIRED = "530 5.7.0 Authentication required"
HOURLY_LIMIT = "450 4.7.1 Too many messages this hour, try again later"


class Transaction(Envelope):
    """aiosmtpd's envelope plus what submission tracks per mail transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.transaction_id = ""
        self.started = 0.0
        self.account = ""
        self.allowed: frozenset[str] = frozenset()
        self.users: list[str] = []  # the local accounts the accepted recipients reach, each once
        self.remote: list[str] = []  # the accepted recipients of other domains (the queue's)


class SubmitHandler:
    """One per process; every connection's protocol calls into it."""

    def __init__(
        self, settings: SubmitSettings, mailstore: MailstoreClient, hourly: HourlyLimit
    ) -> None:
        self.settings = settings
        self.mailstore = mailstore
        self.hourly = hourly
        self.shipper = Deliveries(mailstore)

    # EHLO ---------------------------------------------------------------------------------------
    async def handle_EHLO(
        self,
        server: Any,
        session: Session,
        envelope: Transaction,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """AUTH is advertised only on an encrypted connection (RFC 6409 4.3, RFC 3207 5)."""
        session.host_name = hostname
        encrypted: bool = server.encrypted
        lines = [
            r
            for r in responses
            if not r[4:].upper().startswith("HELP")
            and (encrypted or not r[4:].upper().startswith("AUTH"))
        ]
        lines += [f"250-{keyword}" for keyword in EXTRA_EHLO_KEYWORDS]
        lines.append("250 HELP")
        return lines

    # MAIL ---------------------------------------------------------------------------------------
    async def handle_MAIL(
        self,
        server: Any,
        session: Session,
        envelope: Transaction,
        address: str,
        mail_options: list[str],
    ) -> str:
        account: Any = session.auth_data  # the account's address, set by a successful AUTH
        if not session.authenticated or not isinstance(account, str):
            return AUTH_REQUIRED
        if address == "<>":
            return "553 5.7.1 The null sender is not for submission"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
        try:
            allowed = frozenset(await self.mailstore.sender_addresses(account))
        except NotFound:
            return "553 5.7.1 The authenticated account no longer exists"
        except MailstoreError as exc:
            log.warning("mailstore_error", during="MAIL", error=str(exc))
            return "451 4.3.0 Mailstore unavailable, try again later"
        if not senders.may_send_as(address, allowed):
            return senders.not_yours(address)
        try:
            if await self.hourly.exhausted(account):
                return HOURLY_LIMIT
        except REDIS_ERRORS as exc:
            log.warning("redis_error", during="MAIL", error=f"{type(exc).__name__}: {exc}")
            return "451 4.3.0 Service temporarily unavailable, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.transaction_id = secrets.token_hex(8)
        envelope.started = time.monotonic()
        envelope.account = account
        envelope.allowed = allowed
        return "250 2.1.0 Ok"

    # RCPT ---------------------------------------------------------------------------------------
    async def handle_RCPT(
        self,
        server: Any,
        session: Session,
        envelope: Transaction,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.submit_max_recipients:
            return "452 4.5.3 Too many recipients"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
        parts = split_address(address)
        if parts is None or normalize_domain(parts[1]) is None:
            return f"553 5.1.3 <{address}>: Bad recipient address syntax"
        try:
            found = await self.mailstore.recipient(address)
        except NotFound as exc:
            if exc.code != "unknown_domain":
                return f"550 5.1.1 <{address}>: Recipient address rejected: user unknown"
            reply = remote_recipient(address)
            if reply.startswith("250"):
                envelope.remote.append(address)
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(rcpt_options)
            return reply
        except InsufficientStorage as exc:
            if exc.code == "quota_exceeded":
                return f"552 5.2.2 <{address}>: Mailbox full: the message exceeds the quota"
            return f"452 4.2.2 <{address}>: Mailbox full, try again later"
        except MailstoreError as exc:
            log.warning("mailstore_error", during="RCPT", error=str(exc))
            return "451 4.3.0 Mailstore unavailable, try again later"
        envelope.users.extend(a for a in found.accounts if a not in envelope.users)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    # DATA ---------------------------------------------------------------------------------------
    async def handle_DATA(self, server: Any, session: Session, envelope: Transaction) -> str:
        content: bytes = envelope.original_content or b""
        authors = header_from_addresses(content)
        if authors is None:
            return self._done(
                envelope,
                content,
                "bad_from",
                None,
                "550 5.6.0 The message needs one From: field of valid addresses",
            )
        for author in authors:
            if not senders.may_send_as(author, envelope.allowed):
                return self._done(envelope, content, "not_yours", None, senders.not_yours(author))
        try:
            counted = await self.hourly.take(envelope.account)
        except REDIS_ERRORS as exc:
            log.warning("redis_error", during="DATA", error=f"{type(exc).__name__}: {exc}")
            return self._done(
                envelope,
                content,
                "tempfail",
                None,
                "451 4.3.0 Service temporarily unavailable, try again later",
            )
        if counted is None:
            return self._done(envelope, content, "hourly_limit", None, HOURLY_LIMIT)
        now = datetime.datetime.now(datetime.UTC)
        hostname = self.settings.mail_hostname
        trace = senders.received(
            helo=session.host_name,
            hostname=hostname,
            protocol=protocol_name(
                esmtp=True, tls=True, smtputf8=bool(envelope.smtp_utf8), authenticated=True
            ),
            transaction_id=envelope.transaction_id,
            tls=server.tls_description(),
            when=now,
        ) + senders.added_fields(content, hostname, when=now)
        sender = envelope.mail_from or ""
        key = submission_key(
            account=envelope.account,
            sender=sender,
            local=envelope.users,
            remote=envelope.remote,
            content=content,
            transaction_id=envelope.transaction_id,
        )
        queued: str | None = None
        try:
            if envelope.remote:
                # The outbound copy has no Return-Path: that is the final receiver's to add.
                entry = await self.shipper.enqueue(
                    sender, envelope.remote, trace + content, envelope.account, key
                )
                queued = entry.id
            stored: Delivery | None = None
            if envelope.users:
                stored = await self.shipper.deliver(
                    envelope.users, senders.return_path(sender) + trace + content, key
                )
        except MailstoreError as exc:
            result, reply = failure_reply(exc)
            level = log.warning if isinstance(exc, MailstoreUnavailable) else log.error
            level("mailstore_error", during="DATA", error=str(exc), queued=queued)
            await self._give_back(counted)
            if queued is not None:
                result = "local_failed_after_enqueue"
            return self._done(envelope, content, result, None, reply, queued=queued)
        except asyncio.CancelledError:
            self._done(envelope, content, "client_gone", None, "", queued=queued)
            raise
        message_id = stored.id if stored is not None else queued
        reply = f"250 2.0.0 Ok: queued as {message_id}"
        return self._done(envelope, content, "delivered", message_id, reply, queued=queued)

    async def _give_back(self, key: str) -> None:
        try:
            await self.hourly.give_back(key)
        except REDIS_ERRORS as exc:  # the count stays one too high until the hour ends
            log.warning("redis_error", during="DATA", error=f"{type(exc).__name__}: {exc}")

    def _done(
        self,
        envelope: Transaction,
        content: bytes,
        result: str,
        message_id: str | None,
        reply: str,
        *,
        queued: str | None = None,
    ) -> str:
        """Log the outcome of a message (one ``message`` line: ``queued`` is its outbound queue
        entry, if any) and return its reply."""
        metrics.message(result, len(content))
        log.info(
            "message",
            id=message_id,
            transaction=envelope.transaction_id,
            user=envelope.account,
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            remote=list(envelope.remote),
            queued=queued,
            size=len(content),
            result=result,
            reply=reply,
            duration_ms=round((time.monotonic() - envelope.started) * 1000, 1),
        )
        return reply

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal_error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return "451 4.3.0 Internal error, try again later"
