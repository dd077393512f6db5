"""A recipient's outcome from an SMTP reply: 2xx delivered, 5xx failed, anything else deferred
(the mailstore schedules the retry with its back-off, and sends the DSN for a failure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["delivered", "deferred", "failed"]


@dataclass(frozen=True)
class Result:
    status: Status
    reply: str


def from_reply(reply: str) -> Result:
    """``"250 2.0.0 Ok"`` → delivered, ``"550 ..."`` → failed, ``"451 ..."`` (or no code) →
    deferred."""
    first = reply[:1]
    if first == "2":
        return Result("delivered", reply)
    if first == "5":
        return Result("failed", reply)
    return Result("deferred", reply)
