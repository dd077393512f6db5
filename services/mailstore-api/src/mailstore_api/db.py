"""The accounts database: users, password hashes, APOP secrets (encrypted) and fencing numbers.

SQLite in WAL mode on the data volume. The mailstore is the single writer, and every call is short:
one lock guards two connections, both on the same file. Accounts are committed with
``synchronous=FULL`` (on disk when the call returns). Fencing numbers go through the second one,
with ``synchronous=NORMAL``: committed to the WAL, which survives a crash of the process, without an
fsync per POP3 login (that fsync, taken under the one lock, capped logins at one per fsync). A power
loss may forget the last numbers registered; the Redis holder check still stands in front of every
expunge, and Redis's counter only grows, so a later session still gets a higher number (see
docs/architecture.md, "The maildrop lock and fencing"). The methods are blocking; callers run them in a worker
thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
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
