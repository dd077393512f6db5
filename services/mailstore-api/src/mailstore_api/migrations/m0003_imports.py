"""Version 3: the messages imported (``mailctl import``), so that an import run again adds nothing.

One row per account and import key (:func:`mailstore_api.imports.import_key`: the Message-ID and
the sha256 of the message as stored), with the name it was stored under. Rows stay after the
message is deleted (an import run again does not bring deleted mail back); they go with the
account.
"""

from __future__ import annotations

import sqlite3

from mailstore_api.migrations.context import Context


def apply(conn: sqlite3.Connection, context: Context) -> None:
    conn.execute(
        "CREATE TABLE imported ("
        " account TEXT NOT NULL,"
        " key TEXT NOT NULL,"
        " message TEXT NOT NULL,"
        " imported_at TEXT NOT NULL,"
        " PRIMARY KEY (account, key)) WITHOUT ROWID"
    )
