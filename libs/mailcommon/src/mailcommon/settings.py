"""Settings common to every service, read once from the environment with pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mailcommon.addresses import normalize_domain
from mailcommon.proxy import IPNetwork, ProxyPolicy, parse_networks
from mailcommon.secrets import resolve_token, validate_token

LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class CommonSettings(BaseSettings):
    """Environment shared by all services. Each service subclasses this with its own fields."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    mail_hostname: str = "localhost"
    # Where generated secrets (tokens, the self-signed TLS pair) are kept when .env does not set them.
    secrets_dir: Path = Path("/secrets")
    service_token: SecretStr = SecretStr("")
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sentinels to ask for the master ("host:port,host:port"); empty: REDIS_URL names the server.
    # Through Sentinel, REDIS_URL's database, user and password still apply, not its host.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The name the sentinels monitor the master under (``sentinel monitor <name> ...``).
    redis_sentinel_master: str = "mymaster"

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", ",").split(",") if part]
        if isinstance(value, list | tuple):
            for item in value:
                host, _, port = str(item).rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"REDIS_SENTINELS: {item!r} is not host:port")
        return value

    # The domains to receive mail for, "a.test,b.test" in the environment, as lower-case A-labels.
    # The mailstore adds them to its domains at start (more can be added over REST); the first
    # is the primary domain: a bare account name (``bob``) means ``bob@<primary>`` everywhere.
    mail_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validate_default=True
    )

    @field_validator("mail_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", ",").split(",") if part]
        if isinstance(value, list | tuple):
            domains: list[str] = []
            for item in value:
                domain = normalize_domain(str(item))
                if domain is None:
                    raise ValueError(f"MAIL_DOMAINS: {item!r} is not a domain name")
                if domain not in domains:
                    domains.append(domain)
            if not domains:
                raise ValueError("MAIL_DOMAINS is empty: name the domains to receive mail for")
            return domains
        return value

    # The operator's certificate chain and key (certbot, Traefik, Caddy...); watched for changes.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # ACME (RFC 8555): with an e-mail and no TLS_CERT_FILE, the mailstore obtains and renews a
    # certificate for MAIL_HOSTNAME (HTTP-01 on ACME_HTTP_PORT) and the front ends serve it.
    acme_email: str = ""
    acme_directory_url: str = LETS_ENCRYPT_DIRECTORY
    # A CA bundle (PEM) to verify the directory with instead of the usual ones (tests: Pebble's).
    acme_ca_bundle: Path | None = None

    # Bearer token that may read /metrics (the mailstore also takes the admin token there);
    # empty: smtp-in and pop3 serve /metrics to anyone who reaches METRICS_PORT.
    metrics_token: SecretStr = SecretStr("")

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            validate_token("METRICS_TOKEN", value.get_secret_value())
        return value

    @field_validator("tls_cert_file", "tls_key_file", "acme_ca_bundle", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """Compose passes ``TLS_CERT_FILE=`` as an empty string: that means "not configured"."""
        return None if value == "" else value

    @property
    def acme_enabled(self) -> bool:
        """Whether the certificate comes from ACME (an e-mail given, no certificate of one's own)."""
        return bool(self.acme_email) and self.tls_cert_file is None and self.tls_key_file is None

    @property
    def primary_domain(self) -> str:
        """The first of ``MAIL_DOMAINS``: where a bare account name belongs."""
        return self.mail_domains[0]

    def resolved_service_token(self) -> str:
        """The service token: from the environment, else generated once into ``secrets_dir``."""
        return resolve_token(
            "SERVICE_TOKEN", self.service_token.get_secret_value(), self.secrets_dir
        )


class FrontEndSettings(CommonSettings):
    """What smtp-in and pop3 need to reach the mailstore."""

    mailstore_url: str = "http://127.0.0.1:8080"
    mailstore_timeout: float = 30.0
    # Seconds between checks of the certificate files (a changed pair serves within this; SIGHUP: at once).
    tls_reload_interval: float = Field(default=30.0, gt=0, le=60)

    # The /metrics listener (mailcommon.metrics); 0: none.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_bind_host: str = "0.0.0.0"

    # Maximum simultaneous client connections this front end accepts.
    max_connections: int = 1000
    # Maximum simultaneous connections from one client address.
    max_connections_per_ip: int = 50

    # The PROXY protocol (v1 or v2, HAProxy's) on every listener, for a balancer in front: each
    # connection must then come from PROXY_TRUSTED_NETWORKS (CIDRs, comma-separated) and start
    # with a header within PROXY_PROTOCOL_TIMEOUT seconds, or it is closed without a greeting.
    proxy_protocol: bool = False
    proxy_trusted_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # (at least 3 s: aiosmtpd warns below that, for every connection)
    proxy_protocol_timeout: float = Field(default=5.0, ge=3.0, le=60.0)

    @field_validator("proxy_trusted_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        return parse_networks(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_proxy(self) -> FrontEndSettings:
        if self.proxy_protocol and not self.proxy_trusted_networks:
            raise ValueError(
                "PROXY_PROTOCOL=true needs PROXY_TRUSTED_NETWORKS: the balancers' addresses (CIDRs)"
            )
        return self

    def proxy_policy(self) -> ProxyPolicy | None:
        """Whom to believe a PROXY header from; None when the PROXY protocol is off."""
        if not self.proxy_protocol:
            return None
        return ProxyPolicy(self.proxy_trusted_networks, self.proxy_protocol_timeout)
