"""The JSON shapes of the queue's calls (internal API for smtp-submit and smtp-out, admin API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: The most entries one claim hands out, and the longest lease, in seconds.
MAX_CLAIM = 100
MAX_LEASE = 3600.0
MAX_REPLY = 4000


class Enqueued(BaseModel):
    """The 201 of an enqueue (a replay with the same ``Idempotency-Key`` gets the first one's)."""

    id: str
    recipients: list[str]
    size: int = Field(description="octets as received (stored byte for byte)")


class ClaimRequest(BaseModel):
    worker: str = Field(min_length=1, max_length=200, description="who claims (for the logs)")
    limit: int = Field(default=10, ge=1, le=MAX_CLAIM)
    lease_seconds: float = Field(default=300.0, gt=0, le=MAX_LEASE)


class ClaimedRecipient(BaseModel):
    address: str
    attempts: int = Field(description="attempts reported for this recipient so far")
    last_reply: str | None


class ClaimedEntry(BaseModel):
    id: str
    sender: str = Field(description="the envelope sender; '' for the null sender <>")
    account: str | None = Field(description="the submitting account, if given")
    size: int
    created_at: float = Field(description="seconds since the epoch")
    attempts: int = Field(description="times this entry was claimed, this claim included")
    recipients: list[ClaimedRecipient] = Field(description="its pending recipients due now")
    lease: str = Field(description="the lease token to report with")
    lease_expires: float = Field(description="seconds since the epoch")


class Claimed(BaseModel):
    entries: list[ClaimedEntry]


class RecipientResult(BaseModel):
    recipient: str = Field(max_length=320)
    status: Literal["delivered", "deferred", "failed"]
    reply: str = Field(default="", max_length=MAX_REPLY, description="the SMTP reply, or why")


class ReportRequest(BaseModel):
    lease: str = Field(min_length=1, max_length=100)
    results: list[RecipientResult] = Field(max_length=1000)
    release: bool = Field(
        default=True,
        description="end the lease (false: keep it, to report more recipients under it)",
    )


class RecipientState(BaseModel):
    address: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt: float | None = Field(description="seconds since the epoch, while pending")
    last_reply: str | None


class Reported(BaseModel):
    id: str
    removed: bool = Field(description="every recipient is settled: the entry is gone")
    recipients: list[RecipientState]


class QueueEntry(BaseModel):
    """One entry as the admin API shows it."""

    id: str
    sender: str
    account: str | None
    size: int
    created_at: float
    expires_at: float = Field(description="created_at + QUEUE_LIFETIME")
    next_attempt: float
    attempts: int = Field(description="times it was claimed")
    leased_by: str | None = Field(description="the worker holding a live lease, if any")
    lease_expires: float | None
    delay_notified: bool
    recipients: list[RecipientState]


class QueueList(BaseModel):
    entries: list[QueueEntry]
