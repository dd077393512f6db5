"""The verdicts of the SPF, DKIM and ARC checks, as DMARC and Authentication-Results read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass|fail|softfail|neutral|none|temperror|permerror
    scope: str  # "mailfrom" or "helo"
    domain: str  # the domain whose policy was evaluated
    identity: str  # the MAIL FROM address, or the HELO name
    explanation: str


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass|fail|neutral|temperror|permerror|policy
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    header_b: str  # first 12 characters of b=
    reason: str


@dataclass(frozen=True)
class ArcResult:
    result: str  # none|pass|fail
    instances: int
    reason: str
    temporary: bool = False  # a "fail" only because a key could not be looked up now
