"""The mailstore's settings, read once from the environment, and the tokens resolved from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailauth.settings import DnsSettings
from mailauth.signing import DkimSettings
from mailcommon.addresses import account_address
from mailcommon.secrets import InsecureTokenError, resolve_token
from mailcommon.settings import CommonSettings
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict


class MailstoreSettings(CommonSettings, DnsSettings, DkimSettings):
    """Environment of mailstore-api (see .env.example for each variable); DNS_* are for the
    console's DNS page, DKIM_* for the DKIM records it and the API show."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    data_dir: Path = Path("/data")
    admin_token: SecretStr = SecretStr("")
    api_bind_host: str = "0.0.0.0"
    api_bind_port: int = 8080
    # Largest message accepted for delivery, in octets as received.
    max_message_size: int = 26214400
    # APOP (RFC 1939) verification; off by default because it needs a clear-text secret per user.
    apop_enabled: bool = False
    # Seconds a successful password check is remembered in process memory (0 disables the cache).
    auth_cache_ttl: float = 300.0
    # Worker threads for file-system work. Deliveries are fsync-bound and parallel fsyncs batch
    # in the journal, but each thread also contends for the GIL with the event loop: 16 measured
    # best at 50 concurrent deliveries on 2 cores.
    io_threads: int = 16
    # Seconds a delivery's Idempotency-Key is remembered (a retry within it is not stored again).
    delivery_key_retention: float = Field(default=86400.0, gt=0)
    # The outbound queue (seconds): how long a message is retried before it fails as expired,
    # when the sender gets a delay notice (once), the first retry's delay (doubling after each
    # deferral) and the longest.
    queue_lifetime: float = Field(default=5 * 86400.0, gt=0)
    queue_delay_notice: float = Field(default=4 * 3600.0, ge=0)
    queue_retry_base: float = Field(default=300.0, gt=0)
    queue_retry_max: float = Field(default=7200.0, gt=0)
    # The account postmaster@ and abuse@ of every domain go to unless an alias says otherwise
    # (a bare name is in the primary domain); empty: the first account created.
    postmaster_address: str = ""
    # Octets an account may store unless its own quota says otherwise; 0: unlimited.
    default_quota_bytes: int = Field(default=0, ge=0)
    # Seconds uvicorn waits for in-flight requests on SIGTERM.
    shutdown_grace: int = 30
    # Port of the ACME HTTP-01 responder (on API_BIND_HOST; compose publishes host port 80 to it);
    # 0: none. It answers 404 except for the challenges of an order under way.
    acme_http_port: int = Field(default=0, ge=0, le=65535)

    # The web console (/ui/): seconds a session lives without a request, and at most in all;
    # failed sign-ins throttled as POP3 logins are (mailcommon.throttle): at most N per window,
    # per client address and in all (the one name "admin").
    console_session_idle: int = Field(default=1800, ge=60)
    console_session_max: int = Field(default=43200, ge=60)
    console_auth_fail_window: int = Field(default=300, ge=1, le=86400)
    console_auth_fail_max_per_ip: int = Field(default=10, ge=1)
    console_auth_fail_max: int = Field(default=30, ge=1)

    @field_validator("postmaster_address")
    @classmethod
    def _check_postmaster(cls, value: str) -> str:
        if value and account_address(value, "example.invalid") is None:
            raise ValueError(f"POSTMASTER_ADDRESS: {value!r} is not an account address")
        return value

    def postmaster(self) -> str | None:
        """``POSTMASTER_ADDRESS`` as a canonical address, or None when unset."""
        if not self.postmaster_address:
            return None
        return account_address(self.postmaster_address, self.primary_domain)

    def resolved_admin_token(self) -> str:
        """The admin token: from the environment, else generated once into ``secrets_dir``."""
        return resolve_token("ADMIN_TOKEN", self.admin_token.get_secret_value(), self.secrets_dir)


@dataclass(frozen=True)
class Tokens:
    """The two resolved bearer tokens."""

    admin: str
    service: str


def resolve_tokens(settings: MailstoreSettings) -> Tokens:
    """Both tokens; raises :class:`mailcommon.secrets.InsecureTokenError` when one is unusable."""
    tokens = Tokens(
        admin=settings.resolved_admin_token(), service=settings.resolved_service_token()
    )
    if tokens.admin == tokens.service:
        raise InsecureTokenError("ADMIN_TOKEN and SERVICE_TOKEN must differ")
    return tokens
