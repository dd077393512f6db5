"""The DNS records a domain of this server needs, and whether DNS answers them now (through
the checks' resolver, :class:`mailauth.dns.Resolver`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from mailauth.dns import Resolver, TemporaryError

Status = Literal["match", "other", "missing", "error"]


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str
    why: str

    @property
    def zone_line(self) -> str:
        """The record as a zone-file line (what the copy button copies)."""
        value = f'"{self.value}"' if self.type == "TXT" else self.value
        return f"{self.name}. 3600 IN {self.type} {value}"


@dataclass(frozen=True)
class Checked:
    record: Record
    status: Status
    found: list[str]


def expected(domain: str, hostname: str) -> list[Record]:
    """MX to this host, SPF, DMARC and TLS-RPT (reports to postmaster@, which always resolves)."""
    return [
        Record(domain, "MX", f"10 {hostname}.", "mail for the domain comes to this server"),
        Record(
            domain,
            "TXT",
            "v=spf1 mx ~all",
            "SPF: mail from the domain comes from its MX hosts (add the others you send from)",
        ),
        Record(
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}",
            "DMARC: reports to postmaster@ (tighten p= once the reports look right)",
        ),
        Record(
            f"_smtp._tls.{domain}",
            "TXT",
            f"v=TLSRPTv1; rua=mailto:postmaster@{domain}",
            "TLS-RPT: senders report TLS failures to postmaster@",
        ),
    ]


def _same_name(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


async def _check(resolver: Resolver, record: Record) -> Checked:
    try:
        if record.type == "MX":
            answers = await resolver.resolve(record.name, "MX")
            found = [f"{r.preference} {r.exchange}" for r in answers]  # type: ignore[attr-defined]
            wanted = record.value.split()[1]
            hit = any(_same_name(str(r.exchange), wanted) for r in answers)  # type: ignore[attr-defined]
            return Checked(record, "match" if hit else "other" if found else "missing", found)
        texts = [t.decode("utf-8", "replace") for t in await resolver.txt(record.name)]
    except TemporaryError as exc:
        return Checked(record, "error", [str(exc)])
    tag = record.value.split(";")[0].split()[0].lower()  # v=spf1, v=DMARC1, v=TLSRPTv1
    found = [t for t in texts if t.lower().startswith(tag)]
    if record.value in found:
        return Checked(record, "match", found)
    return Checked(record, "other" if found else "missing", found)


async def check(resolver: Resolver, domain: str, hostname: str) -> list[Checked]:
    """Every expected record beside what DNS answers for it, looked up at once."""
    return list(await asyncio.gather(*(_check(resolver, r) for r in expected(domain, hostname))))
