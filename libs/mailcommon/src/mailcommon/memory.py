"""Give memory back to the system after large, short-lived buffers.

glibc raises its mmap threshold after the first large block is freed, so later multi-MiB buffers
(smtp-in's messages while they arrive, mailstore-api's 19 MiB argon2id blocks) come from the heaps,
whose tops cannot shrink past live fragments: the process keeps the peak of its busiest moment for
good. Pinning the threshold (what ``MALLOC_MMAP_THRESHOLD_=131072`` does) keeps large buffers in
their own mappings, returned as soon as they are freed. Elsewhere than glibc these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


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
