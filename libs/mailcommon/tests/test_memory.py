"""The libc handle behind malloc_trim: loaded once, and no child process (ldconfig) per call."""

from __future__ import annotations

import sys

from mailcommon import memory

# Audit events of every way Python starts a process (ctypes.util.find_library runs ldconfig).
_SPAWNS = {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec"}
_seen: list[str] = []
_watching = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _watching and event in _SPAWNS:
        _seen.append(event)


sys.addaudithook(_audit)


def test_trim_starts_no_process_and_reuses_one_handle() -> None:
    global _watching
    first = memory.libc()
    assert first is not None  # glibc here: trim and mallopt are real calls
    _watching = True
    try:
        for _ in range(20):
            memory.trim()
        assert memory.pin_mmap_threshold()
    finally:
        _watching = False
    assert _seen == []
    assert memory.libc() is first
