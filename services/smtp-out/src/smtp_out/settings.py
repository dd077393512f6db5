"""smtp-out's environment, read once at start-up (see .env.example for every variable)."""

from __future__ import annotations

from mailauth.settings import DnsSettings
from mailauth.signing import DkimSettings
from mailcommon.addresses import normalize_domain
from mailcommon.settings import FrontEndSettings
from pydantic import Field, field_validator


class OutSettings(FrontEndSettings, DnsSettings, DkimSettings):
    """How many deliveries at once, how often to ask for work, where remote MXs listen.

    The MX lookups use DNS_* (:class:`mailauth.settings.DnsSettings`, as smtp-in's checks); the
    DKIM keys DKIM_SELECTOR_* under SECRETS_DIR (:class:`mailauth.settings.DkimSettings`)."""

    # Queue entries worked at once (each one SMTP connection at a time).
    smtp_out_concurrency: int = Field(10, ge=1, le=100)
    # Seconds between claims while the queue has nothing due.
    smtp_out_poll_interval: float = Field(5.0, gt=0, le=3600)
    # The port of a remote MX (25; tests point it at receivers on loopback).
    smtp_out_remote_port: int = Field(25, ge=1, le=65535)
    # Seconds an entry is leased for: well above one entry's deliveries (every MX of every
    # domain, each bounded by the timeouts below); a crashed worker's entries wait this long.
    smtp_out_lease_seconds: float = Field(900.0, ge=10, le=3600)
    # Seconds to open a connection to one MX address, and to wait for any one reply (RFC 5321
    # 4.5.3.2 suggests 5 minutes for most replies and 10 for the end of DATA; this one bound
    # is shorter, so that one dead MX does not hold an entry for long).
    smtp_out_connect_timeout: float = Field(30.0, gt=0, le=300)
    smtp_out_command_timeout: float = Field(300.0, gt=0, le=600)
    # MX hosts tried per domain (in preference order), and addresses per host.
    smtp_out_max_mx: int = Field(5, ge=1, le=20)
    # On SIGTERM: seconds to let the transactions under way finish (the rest are cut off; their
    # entries are claimed again once their leases run out).
    smtp_out_shutdown_grace: float = Field(30.0, ge=0)
    # Concurrent HTTP connections to the mailstore.
    smtp_out_mailstore_connections: int = Field(8, ge=1)
    # Run on uvloop's event loop; false: asyncio's own.
    smtp_out_uvloop: bool = True

    @field_validator("mail_hostname")
    @classmethod
    def _check_hostname(cls, value: str) -> str:
        # The EHLO name: remote MXs look it up (and some refuse what does not resolve).
        if normalize_domain(value) is None:
            raise ValueError(f"MAIL_HOSTNAME: {value!r} is not a host name")
        return value
