"""smtp-in's environment, read once at start-up (see .env.example for every variable)."""

from __future__ import annotations

import os
from typing import Literal

from mailauth.settings import DnsSettings
from mailcommon.addresses import normalize_domain
from mailcommon.settings import FrontEndSettings
from pydantic import AliasChoices, Field, field_validator

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024


class SmtpSettings(FrontEndSettings, DnsSettings):
    """Listen address, limits and timeouts of the MX intake."""

    smtp_bind_host: str = "0.0.0.0"
    smtp_bind_port: int = Field(2525, ge=1, le=65535)
    # Largest message stored, in octets as received (CRLF line ends), trace headers included;
    # SIZE advertises this minus headers.MAX_ADDED_HEADERS.
    max_message_size: int = Field(DEFAULT_MAX_MESSAGE_SIZE, ge=32768)
    smtp_max_recipients: int = Field(100, ge=1)
    # Connection limits: SMTP_MAX_CONNECTIONS wins over the shared MAX_CONNECTIONS.
    max_connections: int = Field(
        1000, ge=1, validation_alias=AliasChoices("smtp_max_connections", "max_connections")
    )
    max_connections_per_ip: int = Field(
        50,
        ge=1,
        validation_alias=AliasChoices("smtp_max_connections_per_ip", "max_connections_per_ip"),
    )
    # Seconds without a command before the connection is closed (RFC 5321 4.5.3.2.7: 5 minutes).
    smtp_idle_timeout: float = Field(300.0, gt=0)
    # Seconds without any octet of message data during DATA before the connection is closed.
    smtp_data_timeout: float = Field(300.0, gt=0)
    # Seconds a "this mailbox exists" answer from the mailstore is reused at RCPT (0: always ask).
    smtp_recipient_cache_ttl: float = Field(30.0, ge=0)
    # Concurrent HTTP connections to the mailstore (deliveries beyond it wait their turn).
    smtp_mailstore_connections: int = Field(8, ge=1)
    # Memory that messages being received may take at once, all connections together (octets).
    # A transaction reserves 4 x the SIZE it declared (or 3 x the message size limit when it
    # declared none); beyond the budget DATA waits, then answers 452 4.3.1.
    smtp_data_memory_budget: int = Field(1024 * 1024 * 1024, ge=1024 * 1024)
    # Seconds DATA may wait for room in that budget before the temporary refusal.
    smtp_data_budget_wait: float = Field(30.0, ge=0)
    # On SIGTERM: seconds to let transactions in flight finish before closing what is left.
    smtp_shutdown_grace: float = Field(30.0, ge=0)
    # Run on uvloop's event loop (less CPU per message, bench/RESULTS.md); false: asyncio's own.
    smtp_uvloop: bool = True
    # rspamd's normal worker (http://rspamd:11333) to scan every message with; empty: no scanning.
    rspamd_url: str = ""
    # Seconds one scan may take, connection included, before rspamd counts as unavailable.
    rspamd_timeout: float = Field(10.0, gt=0)
    # rspamd unavailable: accept the message (tagged X-Spam-Checker: unavailable) or answer 451.
    rspamd_fail: Literal["accept", "tempfail"] = "accept"
    # Sent as rspamd's Password header when set (its controller worker asks for one).
    rspamd_password: str = ""

    # Sender authentication at the end of DATA (SPF, DKIM, ARC, DMARC, written as
    # Authentication-Results); false: no checks and no header.
    auth_checks: bool = True
    # The checks' DNS servers, timeout and cache: DNS_* (mailauth.settings.DnsSettings).
    # Processes that verify DKIM and ARC signatures (0: threads of smtp-in itself).
    auth_workers: int = Field(default_factory=lambda: len(os.sched_getaffinity(0)), ge=0, le=64)
    # DKIM signatures verified per message (RFC 6376 6.1 lets a verifier bound the work).
    dkim_max_signatures: int = Field(5, ge=1, le=10)
    # enforce: a DMARC fail under p=reject is refused with 550 5.7.1; tag: stored with X-Spam: Yes.
    dmarc_policy: Literal["enforce", "tag"] = "enforce"
    # accept: a DNS failure in the checks is recorded and the message stored; tempfail: 451 4.7.5.
    auth_temperror: Literal["accept", "tempfail"] = "accept"

    @field_validator("mail_hostname")
    @classmethod
    def _check_hostname(cls, value: str) -> str:
        if normalize_domain(value) is None:
            raise ValueError(f"MAIL_HOSTNAME: {value!r} is not a host name")
        return value
