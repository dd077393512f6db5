"""Give memory back after large messages.

aiosmtpd holds a message in memory while it arrives (one small object per line, then the joined
message). glibc raises its mmap threshold after the first large block is freed, so later multi-MiB
buffers come from the heap, whose top cannot shrink past live fragments: the process keeps the
peak of its busiest moment for good. Pinning the threshold keeps large buffers in their own
mappings, returned to the system as soon as they are freed. Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """True when glibc's mallopt accepted the fixed threshold."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def trim() -> None:
    """Return free heap pages to the system (glibc ``malloc_trim``); a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        return
