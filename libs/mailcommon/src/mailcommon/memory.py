"""Give memory back to the system after large, short-lived buffers.

glibc raises its mmap threshold after the first large block is freed, so later multi-MiB buffers
(smtp-in's messages while they arrive, mailstore-api's 19 MiB argon2id blocks) come from the heaps,
whose tops cannot shrink past live fragments: the process keeps the peak of its busiest moment for
good. Pinning the threshold (what ``MALLOC_MMAP_THRESHOLD_=131072`` does) keeps large buffers in
their own mappings, returned as soon as they are freed. Elsewhere than glibc these are no-ops.

The C library is the one the process already runs on (``dlopen(NULL)``), looked up once:
``ctypes.util.find_library`` would run ``ldconfig`` in a child process at every call, and
:func:`trim` runs on smtp-in's event loop.
"""

from __future__ import annotations

import ctypes
import functools

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The process's own C library symbols, loaded once (None when they cannot be)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """True when glibc's mallopt accepted the fixed threshold."""
    lib = libc()
    try:
        return lib is not None and bool(lib.mallopt(M_MMAP_THRESHOLD, threshold))
    except AttributeError:
        return False


def trim() -> None:
    """Return free heap pages to the system (glibc ``malloc_trim``); a no-op elsewhere."""
    lib = libc()
    try:
        if lib is not None:
            lib.malloc_trim(0)
    except AttributeError:
        return
