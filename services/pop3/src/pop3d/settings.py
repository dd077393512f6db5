"""The pop3 service's settings: the environment, read once at start-up (pydantic-settings)."""

from __future__ import annotations

from mailcommon.settings import FrontEndSettings
from pydantic import Field, model_validator

#: RFC 1939 section 3: an autologout timer in TRANSACTION must be at least 10 minutes.
MIN_IDLE_TIMEOUT = 600.0


class Pop3Settings(FrontEndSettings):
    """Environment of ``python -m pop3d`` (each field is the upper-cased variable name)."""

    pop3_bind_host: str = "0.0.0.0"
    pop3_bind_port: int = Field(1110, ge=0, le=65535)
    # Implicit TLS (POP3S, 995 in compose); 0 turns the listener off.
    pop3s_bind_port: int = Field(1995, ge=0, le=65535)
    # Allow USER/PASS and AUTH PLAIN on a connection without TLS (the seed's `tls off` set-up).
    pop3_allow_plaintext_auth: bool = False
    # APOP (MD5 challenge/response); off unless the operator enables it.
    apop_enabled: bool = False
    # Lifetime of the maildrop lock in Redis, seconds; renewed every third of it.
    pop3_lock_ttl: float = Field(60.0, ge=3.0, le=3600.0)
    # Idle time allowed before login, and after it (RFC 1939: at least 10 minutes).
    pop3_auth_timeout: float = Field(60.0, gt=0.0, le=3600.0)
    pop3_idle_timeout: float = Field(600.0, ge=MIN_IDLE_TIMEOUT, le=86400.0)
    pop3_tls_handshake_timeout: float = Field(30.0, gt=0.0, le=600.0)
    # Unknown commands, commands in the wrong state, bad arguments and over-long lines
    # tolerated per connection before it is closed.
    pop3_max_bad_commands: int = Field(20, ge=1, le=10000)
    # Pause before answering a failed login, seconds.
    pop3_auth_fail_delay: float = Field(1.0, ge=0.0, le=60.0)
    # Fixed-window throttles of failed logins kept in Redis: at most N failures per window,
    # counted per client address and per user name given (whether or not the user exists).
    # From a network (/24, /64) the name logged in from within POP3_KNOWN_NETWORK_TTL seconds,
    # the name's limit gives way to POP3_AUTH_FAIL_MAX_PER_KNOWN_NET for that name and network,
    # so guesses from elsewhere cannot lock the owner out (mailcommon.throttle; 0: none remembered).
    pop3_auth_fail_window: int = Field(300, ge=1, le=86400)
    pop3_auth_fail_max_per_ip: int = Field(30, ge=1)
    pop3_auth_fail_max_per_user: int = Field(10, ge=1)
    pop3_auth_fail_max_per_known_net: int = Field(10, ge=1)
    pop3_known_network_ttl: int = Field(30 * 86400, ge=0)
    # HTTP connections to the mailstore (one pool per process, mailcommon.transport). A RETR/TOP
    # of a message over 256 KiB holds one while it streams to the client; smaller ones hold it
    # for the HTTP exchange only.
    pop3_mailstore_connections: int = Field(32, ge=4, le=1000)
    # Prefetch for sequential RETR/TOP of small messages (up to 64 KiB): stored octets fetched
    # ahead per session in one mailstore call (0 turns prefetch off; the mailstore allows at
    # most 1 MiB per call), and in all the sessions of this process together.
    pop3_prefetch_bytes: int = Field(256 * 1024, ge=0, le=1024 * 1024)
    pop3_prefetch_total: int = Field(32 * 1024 * 1024, ge=0)
    # Seconds a verified password login is remembered (as an HMAC, in process memory): the same
    # name and password again then skip the mailstore's check. A password change or a deleted
    # account ends it at once (the snapshot's credential tag); 0 turns it off.
    auth_cache_ttl: float = Field(300.0, ge=0.0, le=86400.0)
    # Listen backlog of each listener.
    pop3_backlog: int = Field(1024, ge=1, le=65535)
    # Run on uvloop's event loop (less CPU per session, bench/RESULTS.md); false: asyncio's own.
    pop3_uvloop: bool = True

    @model_validator(mode="after")
    def _check(self) -> Pop3Settings:
        if self.max_connections < 1 or self.max_connections_per_ip < 1:
            raise ValueError("MAX_CONNECTIONS and MAX_CONNECTIONS_PER_IP must be at least 1")
        if self.pop3s_bind_port and self.pop3s_bind_port == self.pop3_bind_port:
            raise ValueError("POP3_BIND_PORT and POP3S_BIND_PORT must differ")
        return self

    @property
    def lock_ttl_ms(self) -> int:
        return int(self.pop3_lock_ttl * 1000)
