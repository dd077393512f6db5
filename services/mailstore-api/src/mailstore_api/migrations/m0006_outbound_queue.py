"""Version 6: the outbound queue's state (its message bytes are files in ``DATA_DIR/queue``).

One row per queued message in ``queue_entries`` and one per recipient in ``queue_recipients``
(removed with their entry); ``queue_keys`` remembers each enqueue's ``Idempotency-Key`` and its
answer for ``DELIVERY_KEY_RETENTION``, also after the entry is gone. See
:mod:`mailstore_api.outbound.store` and docs/architecture.md, "Outbound queue".
"""

from __future__ import annotations

import sqlite3

from mailstore_api.migrations.context import Context

_SCHEMA = """
CREATE TABLE queue_entries (
    id             TEXT PRIMARY KEY,
    sender         TEXT NOT NULL,
    account        TEXT,
    size           INTEGER NOT NULL,
    created_at     REAL NOT NULL,
    next_attempt   REAL NOT NULL,
    claims         INTEGER NOT NULL DEFAULT 0,
    lease_token    TEXT,
    lease_worker   TEXT,
    lease_until    REAL,
    delay_notified INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_entries_due ON queue_entries (next_attempt);
CREATE TABLE queue_recipients (
    entry        TEXT NOT NULL REFERENCES queue_entries (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    address      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_reply   TEXT,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (entry, position)
) WITHOUT ROWID;
CREATE TABLE queue_keys (
    key        TEXT PRIMARY KEY,
    answer     TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX queue_keys_created ON queue_keys (created_at);
"""


def apply(conn: sqlite3.Connection, context: Context) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
