"""CPU time of the group committer's one SQLite transaction per batch (idempotency keys).

Runs :class:`mailstore_api.db.DeliveryKeys` as the committer does (settle, look up, record) on a
temporary file, for batches of 1 and of 50 keys, and prints the CPU time (``process_time``, which a
shared machine disturbs far less than wall-clock time) per batch and per key. The commits are not
fsynced here, as in the committer's syncfs mode (its syncfs flushes them).

    uv run python bench/delivery_keys_bench.py
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

from mailstore_api.db import DeliveryKeys, KeyedDelivery

NAME = "1733000000.000000123456789a.host,S=4096,W=4150"


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        keys = DeliveryKeys(Path(work) / "deliveries.sqlite3", fsync_commits=False)
        batch = 0
        for per_batch, batches in ((1, 2000), (50, 200)):
            cpu = time.process_time()
            for _ in range(batches):
                rows = [
                    KeyedDelivery(secrets.token_hex(8), NAME, ["bench0"], 4096)
                    for _ in range(per_batch)
                ]
                with keys.batch() as tx:
                    tx.settle(batch)
                    tx.lookup([row.key for row in rows])
                    batch += 1
                    tx.record(rows, batch, time.time())
            cpu = time.process_time() - cpu
            print(
                f"{per_batch:>2} key(s) per batch: {cpu / batches * 1e6:6.0f} us CPU per batch, "
                f"{cpu / batches / per_batch * 1e6:5.0f} us per key"
            )
        keys.close()


if __name__ == "__main__":
    main()
