"""The accounts database (users, password hashes, APOP secrets (encrypted), fencing numbers) and,
apart, the delivery keys (:class:`DeliveryKeys`, ``deliveries.sqlite3``).

SQLite in WAL mode on the data volume. The mailstore is the single writer, and every call is short:
one lock guards two connections, both on the same file. Accounts are committed with
``synchronous=FULL`` (on disk when the call returns). Fencing numbers go through the second one,
with ``synchronous=NORMAL``: committed to the WAL, which survives a crash of the process, without an
fsync per POP3 login (that fsync, taken under the one lock, capped logins at one per fsync). A power
loss may forget the last numbers registered; the Redis holder check still stands in front of every
expunge, and Redis's counter only grows, so a later session still gets a higher number (see
docs/architecture.md, "The maildrop lock and fencing"). The methods are blocking; callers run them
in a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    apop_secret   BLOB,
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fences (
    username TEXT PRIMARY KEY,
    highest  INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class UserRow:
    """One account as stored."""

    username: str
    password_hash: str
    apop_secret: bytes | None
    created_at: str


class Database:
    """Blocking access to ``users.sqlite3``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = _connect(path, "FULL")
        self._conn.executescript(_SCHEMA)
        self._fence_conn = _connect(path, "NORMAL")

    def close(self) -> None:
        with self._lock:
            self._fence_conn.close()
            self._conn.close()

    @contextmanager
    def _tx(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        conn = conn or self._conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ping(self) -> None:
        """Raise if the database cannot answer a query."""
        with self._lock:
            self._conn.execute("SELECT count(*) FROM users").fetchone()

    def usernames(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT username FROM users")}

    def get_user(self, username: str) -> UserRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT username, password_hash, apop_secret, created_at FROM users"
                " WHERE username = ?",
                (username,),
            ).fetchone()
        return UserRow(*row) if row else None

    def list_users(self) -> list[UserRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT username, password_hash, apop_secret, created_at FROM users"
                " ORDER BY username"
            ).fetchall()
        return [UserRow(*row) for row in rows]

    def create_user(self, username: str, password_hash: str, created_at: str) -> bool:
        """False when the name is taken."""
        try:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)",
                    (username, password_hash, created_at),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def set_password(self, username: str, password_hash: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username)
            )
            return cur.rowcount == 1

    def set_apop_secret(self, username: str, sealed: bytes | None) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE users SET apop_secret = ? WHERE username = ?", (sealed, username)
            )
            return cur.rowcount == 1

    def delete_user(self, username: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM users WHERE username = ?", (username,))
            return cur.rowcount == 1

    def highest_fence(self, username: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT highest FROM fences WHERE username = ?", (username,)
            ).fetchone()
        return int(row[0]) if row else 0

    def register_fence(self, username: str, fence: int) -> tuple[bool, int]:
        """Record ``fence`` as the highest seen unless a higher one was; returns (ok, highest)."""
        with self._tx(self._fence_conn) as conn:
            row = conn.execute(
                "SELECT highest FROM fences WHERE username = ?", (username,)
            ).fetchone()
            highest = int(row[0]) if row else 0
            if fence < highest:
                return False, highest
            if fence > highest:
                conn.execute(
                    "INSERT INTO fences (username, highest) VALUES (?, ?)"
                    " ON CONFLICT(username) DO UPDATE SET highest = excluded.highest",
                    (username, fence),
                )
            return True, fence


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    recipients TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at REAL NOT NULL,
    batch      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at);
CREATE INDEX IF NOT EXISTS deliveries_batch ON deliveries (batch);
CREATE TABLE IF NOT EXISTS settled (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    batch INTEGER NOT NULL
);
INSERT OR IGNORE INTO settled (id, batch) VALUES (1, 0);
"""


@dataclass(frozen=True)
class KeyedDelivery:
    """A delivery recorded under its ``Idempotency-Key``: what its 201 said."""

    key: str
    name: str
    recipients: list[str]
    size: int


class DeliveryKeys:
    """``deliveries.sqlite3``: the idempotency keys of recent deliveries, written by the committer.

    Only :class:`~mailstore_api.committer.GroupCommitter`'s thread uses it (one transaction per
    batch, :meth:`batch`); why its commits need no fsync of their own (``synchronous=NORMAL``
    when the committer's ``syncfs`` covers the file) is in the committer's docstring. Every row
    carries the number of the batch that wrote it; ``settled`` holds the highest batch whose
    outcome is final (its rows are exactly its stored deliveries); rows of later batches are in
    doubt after a crash (:meth:`in_doubt`).
    """

    def __init__(self, path: Path, *, fsync_commits: bool) -> None:
        self.path = path
        self._conn = _connect(path, "FULL" if fsync_commits else "NORMAL")
        self._conn.executescript(_KEYS_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def batch(self) -> Iterator[KeyBatch]:
        """One write transaction (ROLLBACK on error)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield KeyBatch(self._conn)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def last_batch(self) -> int:
        """The highest batch number used so far."""
        row = self._conn.execute(
            "SELECT max(batch) FROM (SELECT max(batch) AS batch FROM deliveries"
            " UNION ALL SELECT batch FROM settled)"
        ).fetchone()
        return int(row[0])

    def in_doubt(self) -> list[KeyedDelivery]:
        """The rows of batches after the last settled one (a crash came before their end)."""
        rows = self._conn.execute(
            "SELECT key, name, recipients, size FROM deliveries"
            " WHERE batch > (SELECT batch FROM settled)"
        ).fetchall()
        return [_keyed(row) for row in rows]


class KeyBatch:
    """The statements of one batch's transaction (:meth:`DeliveryKeys.batch`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def lookup(self, keys: list[str]) -> dict[str, KeyedDelivery]:
        found: dict[str, KeyedDelivery] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self._conn.execute(
                f"SELECT key, name, recipients, size FROM deliveries WHERE key IN ({marks})",  # noqa: S608
                part,
            ):
                found[row[0]] = _keyed(row)
        return found

    def record(self, rows: list[KeyedDelivery], batch: int, now: float) -> None:
        self._conn.executemany(
            "INSERT INTO deliveries (key, name, recipients, size, created_at, batch)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(r.key, r.name, json.dumps(r.recipients), r.size, now, batch) for r in rows],
        )

    def forget(self, keys: Iterable[str]) -> None:
        self._conn.executemany("DELETE FROM deliveries WHERE key = ?", [(k,) for k in keys])

    def settle(self, batch: int) -> None:
        """Batches up to ``batch`` are final."""
        self._conn.execute("UPDATE settled SET batch = ? WHERE batch < ?", (batch, batch))

    def prune(self, before: float) -> int:
        """Forget the keys recorded before ``before``; how many."""
        return self._conn.execute("DELETE FROM deliveries WHERE created_at < ?", (before,)).rowcount


def _keyed(row: tuple[str, str, str, int]) -> KeyedDelivery:
    return KeyedDelivery(row[0], row[1], json.loads(row[2]), int(row[3]))
