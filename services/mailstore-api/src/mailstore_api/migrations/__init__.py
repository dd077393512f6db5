"""Versioned schema migrations of ``users.sqlite3``: one module per migration, in order.

The database's ``PRAGMA user_version`` is the number of migrations applied. At start-up
:func:`migrate` applies the missing ones, each in its own transaction together with the new
version number (a crash leaves the database at the last whole migration), and refuses a database
whose version is higher than the code knows (made by a newer release: running on would corrupt it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import ModuleType

from mailstore_api.migrations import (
    m0001_users,
    m0002_addresses,
    m0003_imports,
    m0004_console,
    m0005_fence_tokens,
    m0006_outbound_queue,
)
from mailstore_api.migrations.context import Context

#: Every migration, oldest first; the position + 1 is the version it brings the database to.
MIGRATIONS: tuple[ModuleType, ...] = (
    m0001_users,
    m0002_addresses,
    m0003_imports,
    m0004_console,
    m0005_fence_tokens,
    m0006_outbound_queue,
)


__all__ = ["MIGRATIONS", "Context", "SchemaTooNew", "check", "check_file", "migrate", "version"]


class SchemaTooNew(Exception):
    """The database was made by a newer release."""


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check(conn: sqlite3.Connection) -> int:
    """The database's version; raises :class:`SchemaTooNew` when the code does not know it."""
    current = version(conn)
    if current > len(MIGRATIONS):
        raise SchemaTooNew(
            f"the accounts database is at schema version {current}; this release knows up to "
            f"{len(MIGRATIONS)}: it was written by a newer release"
        )
    return current


def check_file(path: Path) -> None:
    """:func:`check` on the database at ``path``, if there is one: at start-up, before the
    server starts (the refusal is one line, not a failed application start-up)."""
    if not path.exists():
        return
    conn = sqlite3.connect(path)
    try:
        check(conn)
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection, context: Context) -> list[int]:
    """Bring the database to the latest version; returns the versions applied."""
    current = check(conn)
    applied: list[int] = []
    for number, module in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            module.apply(conn, context)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(number)
    return applied
