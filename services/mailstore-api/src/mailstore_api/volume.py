"""The single-writer lock on DATA_DIR: one mailstore-api per volume, enforced.

An exclusive ``flock`` on ``DATA_DIR/mailstore.lock``, held for the life of the process (the kernel
drops it when the process dies, even by SIGKILL). A second mailstore on the same volume refuses to
start. Holding it is also what makes start-up clean-up safe: no other process can be writing in a
``tmp/``, so every file there is a leftover of a crash.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class VolumeBusy(Exception):
    """Another process holds the data directory's lock."""


def hold_data_lock(data_dir: Path) -> int:
    """Take the lock (creating DATA_DIR if needed); returns the descriptor to keep open."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "mailstore.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise VolumeBusy(
            f"another mailstore-api is using {data_dir} (it holds {data_dir / 'mailstore.lock'})"
        ) from None
    return fd
