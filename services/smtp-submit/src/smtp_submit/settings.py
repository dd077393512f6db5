"""smtp-submit's environment, read once at start-up (see .env.example for every variable)."""

from __future__ import annotations

from mailcommon.addresses import normalize_domain
from mailcommon.settings import FrontEndSettings
from pydantic import AliasChoices, Field, field_validator, model_validator

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024


class SubmitSettings(FrontEndSettings):
    """Listen addresses, limits and timeouts of the submission service."""

    submit_bind_host: str = "0.0.0.0"
    # Submission with STARTTLS (587 on the host; AUTH only once TLS is up, RFC 6409, RFC 3207).
    submit_bind_port: int = Field(1587, ge=1, le=65535)
    # Submission over implicit TLS (465 on the host, RFC 8314).
    submits_bind_port: int = Field(1465, ge=1, le=65535)
    # Largest message accepted, in octets as received, our added headers included.
    max_message_size: int = Field(DEFAULT_MAX_MESSAGE_SIZE, ge=32768)
    # Recipients of one message (452 4.5.3 beyond), and messages an account may submit per
    # clock hour (450 4.7.1 beyond, counted in Redis across replicas).
    submit_max_recipients: int = Field(100, ge=1)
    submit_max_messages_per_hour: int = Field(500, ge=1)
    # Connections at once, both ports together, and from one client address (421 4.7.0 beyond):
    # SUBMIT_MAX_CONNECTIONS wins over the shared MAX_CONNECTIONS.
    max_connections: int = Field(
        1000, ge=1, validation_alias=AliasChoices("submit_max_connections", "max_connections")
    )
    max_connections_per_ip: int = Field(
        50,
        ge=1,
        validation_alias=AliasChoices("submit_max_connections_per_ip", "max_connections_per_ip"),
    )
    # Seconds without a command (or message data) before the connection is closed.
    submit_idle_timeout: float = Field(300.0, gt=0)
    # Failed logins, as POP3's (mailcommon.throttle): per client address, per user name, per
    # name and known network, in fixed windows of SUBMIT_AUTH_FAIL_WINDOW seconds.
    submit_auth_fail_delay: float = Field(1.0, ge=0.0, le=60.0)
    submit_auth_fail_window: int = Field(300, ge=1, le=86400)
    submit_auth_fail_max_per_ip: int = Field(30, ge=1)
    submit_auth_fail_max_per_user: int = Field(10, ge=1)
    submit_auth_fail_max_per_known_net: int = Field(10, ge=1)
    submit_known_network_ttl: int = Field(30 * 86400, ge=0)
    # On SIGTERM: seconds to let transactions in flight finish before closing what is left.
    submit_shutdown_grace: float = Field(30.0, ge=0)
    # Concurrent HTTP connections to the mailstore.
    submit_mailstore_connections: int = Field(8, ge=1)
    # Run on uvloop's event loop; false: asyncio's own.
    submit_uvloop: bool = True

    @field_validator("mail_hostname")
    @classmethod
    def _check_hostname(cls, value: str) -> str:
        if normalize_domain(value) is None:
            raise ValueError(f"MAIL_HOSTNAME: {value!r} is not a host name")
        return value

    @model_validator(mode="after")
    def _no_proxy_protocol(self) -> SubmitSettings:
        # A PROXY header would be read as an SMTP command: refuse, rather than serve wrongly.
        if self.proxy_protocol:
            raise ValueError("PROXY_PROTOCOL: smtp-submit does not read PROXY headers yet")
        return self
