"""The accounts database (domains, accounts with their password hashes, APOP secrets (encrypted)
and quotas, aliases, fencing numbers) and, apart, the delivery keys (:class:`DeliveryKeys`,
``deliveries.sqlite3``).

SQLite in WAL mode on the data volume; its schema is versioned (:mod:`mailstore_api.migrations`,
applied when it opens). The mailstore is the single writer, and every call is short: one lock
guards two connections, both on the same file. Accounts are committed with ``synchronous=FULL``
(on disk when the call returns). Fencing numbers go through the second one, with
``synchronous=NORMAL``: committed to the WAL, which survives a crash of the process, without an
fsync per POP3 login (that fsync, taken under the one lock, capped logins at one per fsync). A
power loss may forget the last numbers registered; the Redis holder check still stands in front
of every expunge, and Redis's counter only grows, so a later session still gets a higher number
(see docs/architecture.md, "The maildrop lock and fencing"). The methods are blocking; callers
run them in a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailstore_api.migrations import Context, migrate

_ACCOUNT_COLUMNS = (
    "address, domain, password_hash, apop_secret, apop_bound_to, created_at, quota_bytes,"
    " quota_messages"
)


@dataclass(frozen=True)
class AccountRow:
    """One account as stored."""

    address: str  # local@domain, canonical
    domain: str
    password_hash: str
    apop_secret: bytes | None
    apop_bound_to: str | None  # the name the APOP secret was sealed under
    created_at: str
    quota_bytes: int | None  # None: DEFAULT_QUOTA_BYTES; 0: unlimited
    quota_messages: int | None  # None or 0: unlimited


@dataclass(frozen=True)
class DomainRow:
    name: str  # A-labels
    created_at: str


@dataclass(frozen=True)
class AliasRow:
    address: str  # local@domain, or @domain for a catch-all
    domain: str
    targets: tuple[str, ...]
    created_at: str


#: The accounts database's file in DATA_DIR.
DATABASE_FILE = "users.sqlite3"


class Database:
    """Blocking access to ``users.sqlite3``; migrated to the latest schema when it opens."""

    def __init__(self, path: Path, context: Context) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = _connect(path, "FULL")
        self.migrated = migrate(self._conn, context)
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

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the accounts connection (``synchronous=FULL``: on disk when
        it ends), for the tables of other modules (:mod:`mailstore_api.outbound.store`)."""
        with self._tx() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The accounts connection under the lock, for reads of other modules' tables."""
        with self._lock:
            yield self._conn

    def ping(self) -> None:
        """Raise if the database cannot answer a query."""
        with self._lock:
            self._conn.execute("SELECT count(*) FROM accounts").fetchone()

    # -- domains ---------------------------------------------------------------------------------

    def domains(self) -> list[DomainRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, created_at FROM domains ORDER BY rowid"
            ).fetchall()
        return [DomainRow(*row) for row in rows]

    def add_domain(self, name: str, created_at: str) -> bool:
        """False when it exists."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO domains (name, created_at) VALUES (?, ?)", (name, created_at)
            )
            return cur.rowcount == 1

    def delete_domain(self, name: str) -> None:
        """The domain, its aliases and its accounts (their fencing numbers stay: they only grow)."""
        with self._tx() as conn:
            conn.execute("DELETE FROM aliases WHERE domain = ?", (name,))
            conn.execute(
                "DELETE FROM imported WHERE account IN"
                " (SELECT address FROM accounts WHERE domain = ?)",
                (name,),
            )
            conn.execute("DELETE FROM accounts WHERE domain = ?", (name,))
            conn.execute("DELETE FROM domains WHERE name = ?", (name,))

    # -- the console's admin password ------------------------------------------------------------

    def admin_password_hash(self) -> str | None:
        """The argon2id hash ``mailctl admin passwd`` set, or None when none was set."""
        with self._lock:
            row = self._conn.execute("SELECT password_hash FROM console_admin").fetchone()
        return None if row is None else str(row[0])

    def set_admin_password(self, password_hash: str, changed_at: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO console_admin (id, password_hash, changed_at) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash,"
                " changed_at = excluded.changed_at",
                (password_hash, changed_at),
            )

    # -- accounts --------------------------------------------------------------------------------

    def accounts(self) -> list[AccountRow]:
        """Every account, the first created first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, rowid"  # noqa: S608
            ).fetchall()
        return [AccountRow(*row) for row in rows]

    def get_account(self, address: str) -> AccountRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE address = ?",  # noqa: S608
                (address,),
            ).fetchone()
        return AccountRow(*row) if row else None

    def create_account(self, row: AccountRow) -> bool:
        """False when the address is taken."""
        try:
            with self._tx() as conn:
                conn.execute(
                    f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (
                        row.address,
                        row.domain,
                        row.password_hash,
                        row.apop_secret,
                        row.apop_bound_to,
                        row.created_at,
                        row.quota_bytes,
                        row.quota_messages,
                    ),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def set_password(self, address: str, password_hash: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE accounts SET password_hash = ? WHERE address = ?", (password_hash, address)
            )
            return cur.rowcount == 1

    def set_apop_secret(self, address: str, sealed: bytes | None) -> bool:
        """Store a secret sealed under ``address`` (or none)."""
        bound = address if sealed is not None else None
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE accounts SET apop_secret = ?, apop_bound_to = ? WHERE address = ?",
                (sealed, bound, address),
            )
            return cur.rowcount == 1

    def set_quota(self, address: str, quota_bytes: int | None, quota_messages: int | None) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE accounts SET quota_bytes = ?, quota_messages = ? WHERE address = ?",
                (quota_bytes, quota_messages, address),
            )
            return cur.rowcount == 1

    def delete_account(self, address: str) -> bool:
        with self._tx() as conn:
            conn.execute("DELETE FROM imported WHERE account = ?", (address,))
            cur = conn.execute("DELETE FROM accounts WHERE address = ?", (address,))
            return cur.rowcount == 1

    # -- imports ---------------------------------------------------------------------------------

    def imported(self, account: str, key: str) -> str | None:
        """The name a message imported under ``key`` was stored under, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT message FROM imported WHERE account = ? AND key = ?", (account, key)
            ).fetchone()
        return str(row[0]) if row else None

    def record_import(self, account: str, key: str, message: str, imported_at: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO imported (account, key, message, imported_at)"
                " VALUES (?, ?, ?, ?)",
                (account, key, message, imported_at),
            )

    # -- aliases ---------------------------------------------------------------------------------

    def aliases(self) -> list[AliasRow]:
        with self._lock:
            aliases = self._conn.execute(
                "SELECT address, domain, created_at FROM aliases ORDER BY rowid"
            ).fetchall()
            targets = self._conn.execute(
                "SELECT alias, target FROM alias_targets ORDER BY alias, position"
            ).fetchall()
        by_alias: dict[str, list[str]] = {}
        for alias, target in targets:
            by_alias.setdefault(alias, []).append(target)
        return [
            AliasRow(address, domain, tuple(by_alias.get(address, ())), created)
            for address, domain, created in aliases
        ]

    def create_alias(self, row: AliasRow) -> bool:
        """False when the alias exists."""
        try:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO aliases (address, domain, created_at) VALUES (?, ?, ?)",
                    (row.address, row.domain, row.created_at),
                )
                conn.executemany(
                    "INSERT INTO alias_targets (alias, target, position) VALUES (?, ?, ?)",
                    [(row.address, target, i) for i, target in enumerate(row.targets)],
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def delete_alias(self, address: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM aliases WHERE address = ?", (address,))
            return cur.rowcount == 1

    # -- Maildir moves of a migration ------------------------------------------------------------

    def maildir_moves(self) -> list[tuple[str, str]]:
        """(source, target) paths under the Maildir root, still to be moved."""
        with self._lock:
            return [
                (str(a), str(b))
                for a, b in self._conn.execute("SELECT source, target FROM maildir_moves")
            ]

    def maildir_moved(self, source: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM maildir_moves WHERE source = ?", (source,))

    # -- fencing numbers -------------------------------------------------------------------------

    def highest_fence(self, account: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT highest FROM fences WHERE account = ?", (account,)
            ).fetchone()
        return int(row[0]) if row else 0

    def register_fence(self, account: str, fence: int, token: str) -> tuple[bool, int]:
        """Record ``fence`` (held with lock ``token``) as the highest seen; returns (ok, highest).

        Refused when a higher number was seen, or this number with another token: after a Redis
        failover that lost the last lock writes the same number can be handed out twice, and
        only the session that presented it first may act on it.
        """
        with self._tx(self._fence_conn) as conn:
            row = conn.execute(
                "SELECT highest, token FROM fences WHERE account = ?", (account,)
            ).fetchone()
            highest, holder = (int(row[0]), str(row[1])) if row else (0, "")
            if fence < highest or (fence == highest and token != holder):
                return False, highest
            if fence > highest:
                conn.execute(
                    "INSERT INTO fences (account, highest, token) VALUES (?, ?, ?)"
                    " ON CONFLICT(account) DO UPDATE SET"
                    " highest = excluded.highest, token = excluded.token",
                    (account, fence, token),
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

    def qualify_recipients(self, primary_domain: str) -> int:
        """Once per file: the recipients of rows written before domains (bare user names) become
        addresses in the primary domain, as their accounts did (:mod:`mailstore_api.migrations`);
        returns the rows changed. Marked done with ``PRAGMA user_version = 1``."""
        if int(self._conn.execute("PRAGMA user_version").fetchone()[0]) >= 1:
            return 0
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            changed = self._conn.execute(
                "UPDATE deliveries SET recipients = (SELECT json_group_array(CASE WHEN"
                " instr(value, '@') THEN value ELSE value || '@' || ? END)"
                " FROM json_each(deliveries.recipients)) WHERE recipients NOT LIKE '%@%'",
                (primary_domain,),
            ).rowcount
            self._conn.execute("PRAGMA user_version = 1")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return changed

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
