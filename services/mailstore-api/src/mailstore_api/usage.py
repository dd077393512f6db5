"""What each account stores (messages, octets) and its quota.

Usage is counted once at start-up from the file names in every Maildir (the sizes are in the
names, so no file is opened or stat'ed), which also repairs any drift (files removed or added
behind the mailstore's back), and is kept current on every delivery and deletion, so no request
walks a Maildir. Deliveries in flight at the same moment are checked against the same usage: a
quota can be passed by those few.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstore_api.directory import Account
from mailstore_api.maildir import MailStore, UnknownMailbox


@dataclass(frozen=True)
class Quota:
    """Limits of one account; 0 means unlimited."""

    bytes: int
    messages: int

    @classmethod
    def of(cls, account: Account, default_bytes: int) -> Quota:
        quota_bytes = default_bytes if account.quota_bytes is None else account.quota_bytes
        return cls(quota_bytes, account.quota_messages or 0)


@dataclass
class Used:
    messages: int = 0
    bytes: int = 0


class Usage:
    """Messages and stored octets per account address."""

    def __init__(self) -> None:
        self._used: dict[str, Used] = {}

    def count(self, store: MailStore, addresses: list[str]) -> None:
        """Count every account's Maildir (blocking; at start-up)."""
        used: dict[str, Used] = {}
        for address in addresses:
            try:
                entries = store.messages(address)
            except UnknownMailbox:
                entries = []
            used[address] = Used(len(entries), sum(e.size for e in entries))
        self._used = used

    def of(self, address: str) -> Used:
        return self._used.get(address) or Used()

    def added(self, addresses: list[str], size: int) -> None:
        for address in addresses:
            used = self._used.setdefault(address, Used())
            used.messages += 1
            used.bytes += size

    def removed(self, address: str, messages: int, size: int) -> None:
        used = self._used.setdefault(address, Used())
        used.messages = max(0, used.messages - messages)
        used.bytes = max(0, used.bytes - size)

    def forget(self, address: str) -> None:
        self._used.pop(address, None)

    def set(self, address: str, used: Used) -> None:
        self._used[address] = used


def is_full(used: Used, quota: Quota) -> bool:
    """Already at or over a limit: a new message cannot fit whatever its size."""
    return bool(
        (quota.bytes and used.bytes >= quota.bytes)
        or (quota.messages and used.messages >= quota.messages)
    )


def fits(used: Used, quota: Quota, size: int) -> bool:
    """Whether one more message of ``size`` octets stays within the limits."""
    return (not quota.bytes or used.bytes + size <= quota.bytes) and (
        not quota.messages or used.messages + 1 <= quota.messages
    )
