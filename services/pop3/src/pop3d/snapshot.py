"""The maildrop as fixed at login: three parallel lists (ids, sizes in CRLF form, stored sizes)
and a bytearray of deletion marks, one flag per message (small: thousands of sessions may be
logged in)."""

from __future__ import annotations

from mailcommon.client import SnapshotEntry


class Snapshot:
    """The maildrop as it was at login: message n is ``ids[n-1]`` of ``sizes[n-1]`` octets
    (W, CRLF form), ``stored[n-1]`` as stored (S; None from a mailstore that does not say)."""

    __slots__ = ("deleted", "ids", "sizes", "stored")

    def __init__(self, entries: list[SnapshotEntry]) -> None:
        self.ids: list[str] = [e.id for e in entries]
        self.sizes: list[int] = [e.size for e in entries]
        self.stored: list[int | None] = [e.stored_size for e in entries]
        self.deleted = bytearray(len(entries))

    def __len__(self) -> int:
        return len(self.ids)

    def is_deleted(self, n: int) -> bool:
        return bool(self.deleted[n - 1])

    def mark(self, n: int) -> None:
        self.deleted[n - 1] = 1

    def reset(self) -> None:
        self.deleted = bytearray(len(self.ids))

    def live(self) -> list[int]:
        """Numbers of the messages not marked as deleted."""
        return [n for n in range(1, len(self.ids) + 1) if not self.deleted[n - 1]]

    def stat(self) -> tuple[int, int]:
        """Count and total size of the messages not marked as deleted."""
        count = total = 0
        for flag, size in zip(self.deleted, self.sizes, strict=True):
            if not flag:
                count += 1
                total += size
        return count, total

    def marked_ids(self) -> list[str]:
        return [i for i, flag in zip(self.ids, self.deleted, strict=True) if flag]
