"""The DNS resolver's settings, shared by every service that resolves through
:class:`mailauth.dns.Resolver` (smtp-in's checks, the mailstore's DNS page). The DKIM signer's
are :class:`mailauth.signing.DkimSettings`: importing them here would load ``cryptography``'s
extension (about 9 MiB resident) into smtp-in, which never signs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from mailauth.dns import Nameserver, Resolver, parse_nameservers


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
