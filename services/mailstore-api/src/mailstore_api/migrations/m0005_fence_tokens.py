"""Version 5: the lock token beside each mailbox's highest fencing number.

A Redis failover can lose the last lock writes, and then the new master hands the same fencing
number out again, to a second session. The mailstore accepts a number equal to the highest it
has seen only from the token that first presented it (:meth:`mailstore_api.db.Database.
register_fence`). Rows from before have no token (``''``): their number is accepted again by no
one, and the next session is lifted above it (one retry, no lost deletes).
"""

from __future__ import annotations

import sqlite3

from mailstore_api.migrations.context import Context


def apply(conn: sqlite3.Connection, context: Context) -> None:
    conn.execute("ALTER TABLE fences ADD COLUMN token TEXT NOT NULL DEFAULT ''")
