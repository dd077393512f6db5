"""The DNS records a domain of this server needs, and whether DNS answers them now (through
the checks' resolver, :class:`mailauth.dns.Resolver`): one list for the console's DNS page,
``GET /api/v1/domains/{domain}/dns`` and ``mailctl domain dns``.

- SPF names the host (``a:MAIL_HOSTNAME``), not ``mx``, which would authorize whatever the MX
  is (a filtering service in front, a backup MX) and cost a lookup per MX host. ``~all`` and
  DMARC ``p=none``, the advice for a domain's first weeks: its users may still send through
  another provider (many VPS providers block outbound port 25 until asked), whose mail ``-all``
  and ``p=quarantine`` would put in spam. Tighten both once the DMARC reports show all of the
  domain's mail leaving from here, signed.
- DKIM: the public key of each selector (:mod:`mailauth.signing`), generated on first use, so
  the record can be published before the first message is signed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailauth.dns import Resolver, TemporaryError
from mailauth.signing import SigningKey

Status = Literal["match", "other", "missing", "error"]
TXT_STRING = 255  # octets in one character-string of a TXT record (RFC 1035 3.3)


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str
    why: str

    @property
    def zone_line(self) -> str:
        """The record as a zone-file line (what the copy button copies); a TXT value longer
        than one string (a DKIM RSA key) is split into several, which DNS joins again."""
        value = self.value
        if self.type == "TXT":
            chunks = [value[i : i + TXT_STRING] for i in range(0, len(value), TXT_STRING)]
            value = " ".join(f'"{chunk}"' for chunk in chunks)
        return f"{self.name}. 3600 IN {self.type} {value}"


@dataclass(frozen=True)
class Checked:
    record: Record
    status: Status
    found: list[str]


def expected(domain: str, hostname: str, keys: Sequence[SigningKey]) -> list[Record]:
    """MX to this host, SPF, a DKIM key per selector (``keys``: the domain's), DMARC and
    TLS-RPT (reports to postmaster@, which always resolves)."""
    return [
        Record(domain, "MX", f"10 {hostname}.", "mail for the domain comes to this server"),
        Record(
            domain,
            "TXT",
            f"v=spf1 a:{hostname} ~all",
            f"SPF: mail from the domain leaves from {hostname} (add the others you send from)",
        ),
        *(
            Record(
                key.record_name,
                "TXT",
                key.record,
                f"DKIM: the {key.algorithm.decode()} key every message leaving here is signed with",
            )
            for key in keys
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
    tag = record.value.split(";")[0].split()[0].lower()  # v=spf1, v=DKIM1, v=DMARC1, v=TLSRPTv1
    found = [t for t in texts if t.lower().startswith(tag)]
    if record.value in found:
        return Checked(record, "match", found)
    return Checked(record, "other" if found else "missing", found)


async def check(resolver: Resolver, records: Sequence[Record]) -> list[Checked]:
    """Each record (:func:`expected`) beside what DNS answers for it, looked up at once."""
    return list(await asyncio.gather(*(_check(resolver, r) for r in records)))
