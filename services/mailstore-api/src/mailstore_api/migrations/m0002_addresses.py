"""Version 2: domains, accounts as ``local@domain``, aliases, quotas.

Every user of version 1 becomes an account of the primary domain (the first of MAIL_DOMAINS),
with its password hash, APOP secret, creation time and fencing number. An APOP secret is sealed
with its account's name as associated data (:mod:`mailstore_api.apop`): ``apop_bound_to`` keeps
the name it was sealed under (the bare name for these), so it still opens. The Maildirs move from
``mail/<user>`` to ``mail/<domain>/<user>``: the moves are recorded here, in the same transaction,
and done by :func:`mailstore_api.state.open_directory` at every start until none is left.
"""

from __future__ import annotations

import sqlite3

from mailstore_api.migrations.context import Context

_SCHEMA = (
    "CREATE TABLE domains (name TEXT PRIMARY KEY, created_at TEXT NOT NULL)",
    "CREATE TABLE accounts ("
    " address TEXT PRIMARY KEY,"
    " domain TEXT NOT NULL REFERENCES domains (name),"
    " password_hash TEXT NOT NULL,"
    " apop_secret BLOB,"
    " apop_bound_to TEXT,"
    " created_at TEXT NOT NULL,"
    " quota_bytes INTEGER,"
    " quota_messages INTEGER)",
    "CREATE INDEX accounts_domain ON accounts (domain)",
    "CREATE TABLE aliases ("
    " address TEXT PRIMARY KEY,"
    " domain TEXT NOT NULL REFERENCES domains (name),"
    " created_at TEXT NOT NULL)",
    "CREATE INDEX aliases_domain ON aliases (domain)",
    "CREATE TABLE alias_targets ("
    " alias TEXT NOT NULL REFERENCES aliases (address) ON DELETE CASCADE,"
    " target TEXT NOT NULL,"
    " position INTEGER NOT NULL,"
    " PRIMARY KEY (alias, target))",
    "CREATE TABLE maildir_moves (source TEXT PRIMARY KEY, target TEXT NOT NULL)",
)


def apply(conn: sqlite3.Connection, context: Context) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    primary = context.primary_domain
    conn.execute("INSERT INTO domains (name, created_at) VALUES (?, ?)", (primary, context.now))
    conn.execute(
        "INSERT INTO accounts (address, domain, password_hash, apop_secret, apop_bound_to,"
        " created_at)"
        " SELECT username || '@' || ?, ?, password_hash, apop_secret,"
        " CASE WHEN apop_secret IS NULL THEN NULL ELSE username END, created_at"
        " FROM users ORDER BY created_at, rowid",
        (primary, primary),
    )
    conn.execute(
        "INSERT INTO maildir_moves (source, target) SELECT username, ? || '/' || username FROM users",
        (primary,),
    )
    conn.execute("UPDATE fences SET username = username || '@' || ?", (primary,))
    conn.execute("ALTER TABLE fences RENAME COLUMN username TO account")
    conn.execute("DROP TABLE users")
