"""The DNS resolver's settings, shared by every service that resolves through
:class:`mailauth.dns.Resolver` (smtp-in's checks, the mailstore's DNS page), and the DKIM
signer's (:mod:`mailauth.signing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from mailauth.dns import Nameserver, Resolver, parse_nameservers
from mailauth.signing import DkimSigner, Selectors


class DnsSettings(BaseSettings):
    """Mixed into a service's settings."""

    # The DNS servers, "ip" or "ip:port", comma-separated; empty: the system's resolver.
    dns_nameservers: Annotated[list[Nameserver], NoDecode] = Field(default_factory=list)
    # Seconds one DNS lookup may take, every retry included, before it counts as a temperror.
    dns_timeout: float = Field(5.0, gt=0)
    # Answers the resolver keeps (each for its TTL; least recently used dropped beyond this).
    dns_cache_size: int = Field(10000, ge=1)

    @field_validator("dns_nameservers", mode="before")
    @classmethod
    def _parse_nameservers(cls, value: object) -> object:
        return parse_nameservers(value) if isinstance(value, str) else value

    def resolver(self) -> Resolver:
        return Resolver(
            self.dns_nameservers, timeout=self.dns_timeout, cache_size=self.dns_cache_size
        )


class DkimSettings(BaseSettings):
    """The DKIM selectors (mixed into the settings of every service that signs or shows the
    records: the mailstore, smtp-out). Changing one means a new key, generated on first use,
    and a new record to publish (keep the old one until mail signed with it is delivered)."""

    dkim_selector_rsa: str = "md-rsa1"
    dkim_selector_ed25519: str = "md-ed1"

    @model_validator(mode="after")
    def _check_selectors(self) -> Self:
        self.dkim_selectors()  # raises ValueError naming the bad one
        return self

    def dkim_selectors(self) -> Selectors:
        return Selectors(rsa=self.dkim_selector_rsa, ed25519=self.dkim_selector_ed25519)

    def dkim_signer(self, secrets_dir: Path) -> DkimSigner:
        return DkimSigner(secrets_dir, self.dkim_selectors())
