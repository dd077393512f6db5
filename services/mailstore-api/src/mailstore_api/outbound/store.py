"""The outbound queue on the volume, blocking: message files in ``DATA_DIR/queue``, state in the
accounts database (tables of :mod:`mailstore_api.migrations.m0006_outbound_queue`).

An entry is committed by its row: the message file is written, fsynced and its directory
fsynced first, then the rows (entry, recipients, idempotency key) go in in one transaction with
``synchronous=FULL``. A crash before the commit leaves a file without a row (an orphan, removed
at start by :meth:`QueueStore.remove_orphans`), never a row without its file; removal deletes
the rows first, then the file (a crash between leaves an orphan again). So an entry is either
whole or absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mailcommon.atomicfile import fsync_dir

from mailstore_api.db import Database

#: An entry id: 12 hex digits of milliseconds since the epoch, 12 random ones.
ENTRY_ID = re.compile(r"[0-9a-f]{24}")
QUEUE_DIR = "queue"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class UnknownEntry(Exception):
    """No such entry (never queued, or settled and removed, or dropped)."""


class StaleLease(Exception):
    """The lease presented is not the entry's current one, or it has expired."""


@dataclass(frozen=True)
class RecipientRow:
    position: int
    address: str
    state: str  # pending / delivered / failed
    attempts: int
    next_attempt: float
    last_reply: str | None


@dataclass(frozen=True)
class EntryRow:
    id: str
    sender: str  # '' for the null sender <>
    account: str | None  # the submitting account
    size: int
    created_at: float
    next_attempt: float  # the earliest of its pending recipients'
    claims: int  # how many times it was handed to a worker
    lease_token: str | None
    lease_worker: str | None
    lease_until: float | None
    delay_notified: bool
    recipients: tuple[RecipientRow, ...]

    def pending(self) -> list[RecipientRow]:
        return [r for r in self.recipients if r.state == PENDING]

    def leased(self, now: float) -> bool:
        return self.lease_until is not None and self.lease_until > now


@dataclass(frozen=True)
class Update:
    """A recipient's new state (from a report, an expiry)."""

    position: int
    state: str
    attempts: int
    next_attempt: float
    last_reply: str | None


_ENTRY_COLUMNS = (
    "id, sender, account, size, created_at, next_attempt, claims, lease_token, lease_worker,"
    " lease_until, delay_notified"
)


def new_id(now: float) -> str:
    return f"{int(now * 1000):012x}{secrets.token_hex(6)}"


class QueueStore:
    """Blocking access to the queue (callers run it in a worker thread)."""

    def __init__(self, db: Database, directory: Path) -> None:
        self.db = db
        self.directory = directory
        directory.mkdir(mode=0o700, exist_ok=True)

    def path(self, entry_id: str) -> Path:
        return self.directory / entry_id

    # -- files -----------------------------------------------------------------------------------

    def create_file(self, entry_id: str) -> int:
        return os.open(self.path(entry_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def finish_file(self, fd: int) -> None:
        """The file's data, then its name, durable; the descriptor closed."""
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.directory)

    def remove_file(self, entry_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(entry_id))

    def head(self, entry_id: str, limit: int = 64 * 1024) -> bytes:
        """The message's header section (up to ``limit`` octets), for a DSN."""
        try:
            with self.path(entry_id).open("rb") as f:
                data = f.read(limit)
        except FileNotFoundError:
            return b""
        for end in (b"\r\n\r\n", b"\n\n"):
            cut = data.find(end)
            if cut >= 0:
                return data[: cut + len(end) // 2]
        return data

    def remove_orphans(self, max_age: float) -> tuple[int, int]:
        """At start: files without an entry (a crash before the commit, or after a removal's
        commit), if older than ``max_age`` seconds, and entries without a file (a database
        restored from a backup, which holds no queue files); how many of each were removed."""
        with self.db.read() as conn:
            known = {row[0] for row in conn.execute("SELECT id FROM queue_entries")}
        lost = [i for i in known if not self.path(i).exists()]
        if lost:
            with self.db.write() as conn:
                conn.executemany("DELETE FROM queue_entries WHERE id = ?", [(i,) for i in lost])
        cutoff = time.time() - max_age
        removed = 0
        for item in os.scandir(self.directory):
            if item.name in known or not item.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                if item.stat().st_mtime <= cutoff:
                    os.unlink(item.path)
                    removed += 1
        return removed, len(lost)

    # -- rows ------------------------------------------------------------------------------------

    def insert(
        self,
        entry: EntryRow,
        key: str | None,
        answer: dict[str, Any],
        retention: float,
    ) -> tuple[dict[str, Any], bool]:
        """Commit ``entry`` (its file already durable); (its answer, False). With ``key``
        already recorded within ``retention`` seconds: nothing inserted, (the first answer,
        True)."""
        with self.db.write() as conn:
            if key is not None:
                row = conn.execute(
                    "SELECT answer FROM queue_keys WHERE key = ? AND created_at >= ?",
                    (key, entry.created_at - retention),
                ).fetchone()
                if row is not None:
                    return json.loads(row[0]), True
                conn.execute(
                    "DELETE FROM queue_keys WHERE created_at < ?", (entry.created_at - retention,)
                )
                conn.execute(
                    "INSERT OR REPLACE INTO queue_keys (key, answer, created_at) VALUES (?, ?, ?)",
                    (key, json.dumps(answer), entry.created_at),
                )
            conn.execute(
                f"INSERT INTO queue_entries ({_ENTRY_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, 0, NULL, NULL, NULL, 0)",
                (
                    entry.id,
                    entry.sender,
                    entry.account,
                    entry.size,
                    entry.created_at,
                    entry.next_attempt,
                ),
            )
            conn.executemany(
                "INSERT INTO queue_recipients (entry, position, address, state, attempts,"
                " next_attempt, last_reply, updated_at) VALUES (?, ?, ?, ?, 0, ?, NULL, ?)",
                [
                    (entry.id, r.position, r.address, PENDING, r.next_attempt, entry.created_at)
                    for r in entry.recipients
                ],
            )
        return answer, False

    def get(self, entry_id: str) -> EntryRow | None:
        with self.db.read() as conn:
            rows = _entries(conn, "WHERE id = ?", (entry_id,))
        return rows[0] if rows else None

    def entries(self) -> list[EntryRow]:
        """Every entry, the oldest first."""
        with self.db.read() as conn:
            return _entries(conn, "ORDER BY created_at, id", ())

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM queue_entries").fetchone()[0])

    def claim(
        self, worker: str, limit: int, lease_seconds: float, now: float, deadline_before: float
    ) -> list[EntryRow]:
        """Lease up to ``limit`` entries due at ``now``, not leased, created after
        ``deadline_before``; each with its due pending recipients only."""
        token_of: dict[str, str] = {}
        with self.db.write() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM queue_entries WHERE next_attempt <= ?"
                    " AND (lease_until IS NULL OR lease_until <= ?) AND created_at > ?"
                    " ORDER BY next_attempt LIMIT ?",
                    (now, now, deadline_before, limit),
                )
            ]
            for entry_id in ids:
                token_of[entry_id] = secrets.token_urlsafe(18)
                conn.execute(
                    "UPDATE queue_entries SET lease_token = ?, lease_worker = ?, lease_until = ?,"
                    " claims = claims + 1 WHERE id = ?",
                    (token_of[entry_id], worker, now + lease_seconds, entry_id),
                )
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = _entries(conn, f"WHERE id IN ({marks}) ORDER BY next_attempt", tuple(ids))
        return [
            replace(
                row,
                recipients=tuple(
                    r for r in row.recipients if r.state == PENDING and r.next_attempt <= now
                ),
            )
            for row in rows
        ]

    def expired(self, now: float, deadline_before: float) -> list[EntryRow]:
        """Entries created at or before ``deadline_before`` that no live lease holds."""
        with self.db.read() as conn:
            return _entries(
                conn,
                "WHERE created_at <= ? AND (lease_until IS NULL OR lease_until <= ?)",
                (deadline_before, now),
            )

    def apply(
        self,
        entry_id: str,
        lease: str | None,
        updates: list[Update],
        *,
        release: bool,
        delay_notified: bool,
        now: float,
    ) -> bool:
        """Write ``updates`` under ``lease`` (None: no lease needed); True when that settled
        every recipient and the entry was removed (its file too). Raises :class:`UnknownEntry`,
        :class:`StaleLease`."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT lease_token, lease_until FROM queue_entries WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                raise UnknownEntry(entry_id)
            if lease is not None and (row[0] != lease or row[1] is None or row[1] <= now):
                raise StaleLease(entry_id)
            conn.executemany(
                "UPDATE queue_recipients SET state = ?, attempts = ?, next_attempt = ?,"
                " last_reply = ?, updated_at = ? WHERE entry = ? AND position = ?",
                [
                    (u.state, u.attempts, u.next_attempt, u.last_reply, now, entry_id, u.position)
                    for u in updates
                ],
            )
            pending, due = conn.execute(
                "SELECT count(*), min(next_attempt) FROM queue_recipients"
                " WHERE entry = ? AND state = ?",
                (entry_id, PENDING),
            ).fetchone()
            if pending == 0:
                conn.execute("DELETE FROM queue_entries WHERE id = ?", (entry_id,))
            else:
                conn.execute(
                    "UPDATE queue_entries SET next_attempt = ?,"
                    " delay_notified = max(delay_notified, ?) WHERE id = ?",
                    (due, int(delay_notified), entry_id),
                )
                if release:
                    conn.execute(
                        "UPDATE queue_entries SET lease_token = NULL, lease_worker = NULL,"
                        " lease_until = NULL WHERE id = ?",
                        (entry_id,),
                    )
        if pending == 0:
            self.remove_file(entry_id)
        return bool(pending == 0)

    def retry(self, entry_id: str, now: float) -> bool:
        """Make the pending recipients due at ``now``; False when there is no such entry."""
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE queue_entries SET next_attempt = ? WHERE id = ?", (now, entry_id)
            )
            conn.execute(
                "UPDATE queue_recipients SET next_attempt = ? WHERE entry = ? AND state = ?",
                (now, entry_id, PENDING),
            )
            return cur.rowcount == 1

    def drop(self, entry_id: str) -> bool:
        """Remove an entry (rows, then file); False when there is no such entry."""
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM queue_entries WHERE id = ?", (entry_id,))
        if cur.rowcount != 1:
            return False
        self.remove_file(entry_id)
        return True


def _entries(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[EntryRow]:
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM queue_entries {where}",  # noqa: S608
        params,
    ).fetchall()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    recipients: dict[str, list[RecipientRow]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        for r in conn.execute(
            "SELECT entry, position, address, state, attempts, next_attempt, last_reply"  # noqa: S608
            f" FROM queue_recipients WHERE entry IN ({marks}) ORDER BY entry, position",
            part,
        ):
            recipients[r[0]].append(RecipientRow(r[1], r[2], r[3], r[4], r[5], r[6]))
    return [
        EntryRow(
            id=row[0],
            sender=row[1],
            account=row[2],
            size=row[3],
            created_at=row[4],
            next_attempt=row[5],
            claims=row[6],
            lease_token=row[7],
            lease_worker=row[8],
            lease_until=row[9],
            delay_notified=bool(row[10]),
            recipients=tuple(recipients[row[0]]),
        )
        for row in rows
    ]
