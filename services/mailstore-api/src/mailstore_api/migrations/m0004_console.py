"""Version 4: the web console's admin password (``mailctl admin passwd``), one argon2id hash."""

from __future__ import annotations

import sqlite3

from mailstore_api.migrations.context import Context


def apply(conn: sqlite3.Connection, context: Context) -> None:
    conn.execute(
        "CREATE TABLE console_admin ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " password_hash TEXT NOT NULL,"
        " changed_at TEXT NOT NULL)"
    )
