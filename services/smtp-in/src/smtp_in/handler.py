"""Policy and delivery: the aiosmtpd handler (``handle_EHLO``/``MAIL``/``RCPT``/``DATA``).

The protocol side (limits, timeouts, reply codes, STARTTLS) lives in :mod:`smtp_in.protocol`; this
module decides who may send to whom and hands each message to the mailstore once, for all its
recipients, answering 250 only after the mailstore has it on disk.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import Envelope, Session
from mailauth.results import authentication_results, remove_our_results
from mailauth.verdicts import SpfResult
from mailcommon import memory
from mailcommon.client import (
    InsufficientStorage,
    MailstoreClient,
    MailstoreError,
    MailstoreUnavailable,
    NotFound,
)
from mailcommon.logging import get_logger
from mailcommon.smtpdelivery import Deliveries, failure_reply
from mailcommon.smtptrace import protocol_name

from smtp_in import headers, metrics, policy
from smtp_in.addresses import (
    NULL_SENDER,
    check_recipient,
    check_sender,
    relay_denied,
    user_unknown,
)
from smtp_in.authentication import SenderChecks, Verdicts
from smtp_in.recipients import RecipientCache
from smtp_in.rspamd import Rspamd, SpamVerdict
from smtp_in.settings import SmtpSettings

log = get_logger(__name__)

# EHLO keywords we add to aiosmtpd's (SIZE, 8BITMIME, SMTPUTF8, STARTTLS), before the final HELP.
EXTRA_EHLO_KEYWORDS = ("PIPELINING", "ENHANCEDSTATUSCODES")
# Header fields that only smtp-in writes: a message's own are removed before it is stored.
OWNED_FIELDS = frozenset({b"x-spam", b"x-spam-score", b"x-spam-checker"})
# Messages at least this large are followed by a malloc_trim (see mailcommon.memory).
TRIM_AFTER = 1024 * 1024


class Transaction(Envelope):
    """aiosmtpd's envelope plus what we track per mail transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.transaction_id = ""
        self.started = 0.0
        # The lookup address of each accepted RCPT, and the accounts they reach, each once.
        self.addresses: list[str] = []
        self.users: list[str] = []
        # SPF of this MAIL FROM, started at MAIL (None when the checks are off).
        self.spf: asyncio.Task[SpfResult] | None = None
        self.verdicts: Verdicts | None = None
        self.spam: SpamVerdict | None = None


@dataclass(frozen=True)
class Screened:
    """A message let through: the headers we add (trace, verdicts, flags), and the message
    without the fields that claimed to be ours."""

    headers: bytes
    content: bytes


def new_transaction_id() -> str:
    """Our id for one mail transaction (``Received: ... id``, logs): 16 hex digits."""
    return secrets.token_hex(8)


def declared_size(envelope: Envelope) -> int | None:
    """The SIZE the client declared at MAIL (RFC 1870), if any."""
    for option in envelope.mail_options:
        key, _, value = option.partition("=")
        if key == "SIZE" and value.isascii() and value.isdigit():
            return int(value)
    return None


def _peer_ip(session: Session) -> str:
    peer: Any = session.peer  # aiosmtpd annotates it as str; it is the (host, port) tuple
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


class MailHandler:
    """One per process; every connection's protocol instance calls into it."""

    def __init__(
        self,
        settings: SmtpSettings,
        mailstore: MailstoreClient,
        checks: SenderChecks | None,
        rspamd: Rspamd | None,
    ) -> None:
        self.settings = settings
        self.mailstore = mailstore
        self.checks = checks
        self.rspamd = rspamd
        self.recipients = RecipientCache(mailstore, settings.smtp_recipient_cache_ttl)
        # Deliveries in progress; shielded from client disconnects, awaited on shutdown.
        self.shipper = Deliveries(mailstore)
        self.deliveries = self.shipper.tasks

    # PROXY (PROXY_PROTOCOL=true) ----------------------------------------------------------------
    async def handle_PROXY(
        self, server: Any, session: Session, envelope: Transaction, proxy_data: ProxyData
    ) -> bool:
        """aiosmtpd's hook for a valid PROXY header: the protocol decides whom it serves."""
        accepted: bool = server.proxied(proxy_data)
        return accepted

    # EHLO ---------------------------------------------------------------------------------------
    async def handle_EHLO(
        self,
        server: Any,
        session: Session,
        envelope: Transaction,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # No AUTH on an MX: aiosmtpd would advertise its (always failing) mechanisms after TLS.
        lines = [r for r in responses if not r[4:].upper().startswith(("AUTH", "HELP"))]
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
        refusal = check_sender(address)
        if refusal is None and not address.isascii() and not envelope.smtp_utf8:
            refusal = "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.transaction_id = new_transaction_id()
        envelope.started = time.monotonic()
        if self.checks is not None:
            envelope.spf = self.checks.start_spf(
                ip=_peer_ip(session),
                mail_from="" if address == NULL_SENDER else address,
                helo=session.host_name or "",
            )
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
        if len(envelope.rcpt_tos) >= self.settings.smtp_max_recipients:
            return "452 4.5.3 Error: too many recipients"
        if not address.isascii() and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
        check = check_recipient(address)
        if check.address is None:
            assert check.reply is not None
            return check.reply
        try:
            accounts = await self.recipients.accounts(check.address, declared_size(envelope))
        except NotFound as exc:
            return relay_denied(address) if exc.code == "unknown_domain" else user_unknown(address)
        except InsufficientStorage as exc:
            if exc.code == "quota_exceeded":
                return f"552 5.2.2 <{address}>: Mailbox full: the message exceeds the quota"
            return f"452 4.2.2 <{address}>: Mailbox full, try again later"
        except MailstoreError as exc:
            log.warning("mailstore_error", during="RCPT", error=str(exc))
            return "451 4.3.0 Mailstore unavailable, try again later"
        envelope.addresses.append(check.address)
        envelope.users.extend(a for a in accounts if a not in envelope.users)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    # DATA ---------------------------------------------------------------------------------------
    async def handle_DATA(self, server: Any, session: Session, envelope: Transaction) -> str:
        content: bytes = envelope.original_content or b""
        try:
            screened = await self._screen(session, envelope, content)
        except asyncio.CancelledError:
            self._log_message(envelope, content, "client_gone", None, "")
            raise
        server.reply_logged = True
        if isinstance(screened, policy.Refusal):
            self._log_message(envelope, content, screened.result, None, screened.reply)
            return screened.reply
        reply = await self._store(envelope, screened)
        if len(content) >= TRIM_AFTER:
            # Once aiosmtpd has dropped the envelope (right after we return), give the pages back.
            asyncio.get_running_loop().call_soon(memory.trim)
        return reply

    async def _screen(
        self, session: Session, envelope: Transaction, content: bytes
    ) -> Screened | policy.Refusal:
        """The verdicts on the message, and what it becomes: refused, or stored with our headers
        on top. Fields that claim to be ours (Authentication-Results with our authserv-id, RFC
        8601 5; X-Spam and its kin) are removed whether the checks run or not."""
        hostname = self.settings.mail_hostname
        cleaned = remove_our_results(content, hostname, OWNED_FIELDS)
        added = self._trace(session, envelope)
        flagged = False
        if self.checks is not None and envelope.spf is not None:
            verdicts = envelope.verdicts = await self.checks.verdicts(envelope.spf, content)
            refused = policy.refusal(self.settings, verdicts)
            if refused is not None:
                return refused
            added += authentication_results(
                hostname,
                spf=verdicts.spf,
                dkim=verdicts.dkim,
                arc=verdicts.arc,
                dmarc=verdicts.dmarc,
            )
            flagged = policy.flagged(self.settings, verdicts)
        if self.rspamd is not None:
            spam = envelope.spam = await self.rspamd.scan(
                added + cleaned,
                ip=_peer_ip(session),
                helo=session.host_name,
                mail_from=envelope.mail_from or "",
                recipients=envelope.rcpt_tos,
                queue_id=envelope.transaction_id,
            )
            if spam.reply is not None:
                return policy.Refusal(f"spam_{spam.action.replace(' ', '_')}", spam.reply)
            added += spam.headers
            flagged = flagged and not spam.tagged
        if flagged:
            added += b"X-Spam: Yes\r\n"
        return Screened(added, cleaned)

    def _trace(self, session: Session, envelope: Transaction) -> bytes:
        protocol = protocol_name(
            esmtp=bool(session.extended_smtp),
            tls=session.ssl is not None,
            smtputf8=bool(envelope.smtp_utf8),
        )
        return headers.trace_headers(
            sender=envelope.mail_from or "",
            helo=session.host_name,
            peer_ip=_peer_ip(session),
            hostname=self.settings.mail_hostname,
            protocol=protocol,
            transaction_id=envelope.transaction_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
        )

    async def _store(self, envelope: Transaction, screened: Screened) -> str:
        """Deliver the message with our headers on top; the reply to the end of DATA."""
        message_id: str | None = None
        try:
            delivery = await self.shipper.deliver(
                envelope.users, screened.headers + screened.content, envelope.transaction_id
            )
        except MailstoreError as exc:
            result, reply = failure_reply(exc)
            if isinstance(exc, NotFound):
                for lookup in envelope.addresses:
                    self.recipients.forget(lookup)
            if isinstance(exc, MailstoreUnavailable):
                log.warning("mailstore_error", during="DATA", error=str(exc))
            elif result == "tempfail":
                log.error("mailstore_error", during="DATA", error=str(exc))
        except asyncio.CancelledError:
            self._log_message(envelope, screened.content, "client_gone", None, "")
            raise
        else:
            message_id = delivery.id
            result, reply = "delivered", f"250 2.0.0 Ok: queued as {delivery.id}"
        self._log_message(envelope, screened.content, result, message_id, reply)
        return reply

    def _log_message(
        self,
        envelope: Transaction,
        content: bytes,
        result: str,
        message_id: str | None,
        reply: str,
    ) -> None:
        metrics.message(result, len(content))
        log.info(
            "message",
            id=message_id,
            transaction=envelope.transaction_id,
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            users=list(envelope.users),
            size=len(content),
            result=result,
            reply=reply,
            duration_ms=round((time.monotonic() - envelope.started) * 1000, 1),
            **(envelope.verdicts.log_fields() if envelope.verdicts is not None else {}),
            **(
                {"spam": envelope.spam.action, "spam_score": envelope.spam.score}
                if envelope.spam is not None
                else {}
            ),
        )

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal_error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return "451 4.3.0 Internal error, try again later"
