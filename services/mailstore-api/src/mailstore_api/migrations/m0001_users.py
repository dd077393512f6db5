"""Version 1: the schema of the first release, one user namespace (before domains).

A database made by that release has these tables at version 0 already; ``IF NOT EXISTS`` makes
this a no-op for it.
"""

from __future__ import annotations

import sqlite3

from mailstore_api.migrations.context import Context


def apply(conn: sqlite3.Connection, context: Context) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS users ("
        " username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, apop_secret BLOB,"
        " created_at TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS fences (username TEXT PRIMARY KEY, highest INTEGER NOT NULL)"
    )
