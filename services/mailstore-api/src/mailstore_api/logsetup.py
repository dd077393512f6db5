"""Logging set-up: mailcommon's JSON lines, written through a buffer flushed a few times a second.

The standard library's StreamHandler flushes after every record: one ``write`` system call per
request on the event loop thread, where each system call gives the GIL away to the worker threads
doing fsyncs and costs up to a switch interval to get it back. Buffering makes that a few writes
per second. The price: a process killed with SIGKILL loses at most ``interval`` seconds of log
lines; a normal exit flushes.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import threading

from mailcommon.logging import configure_logging


class _DeferredFlush(io.TextIOWrapper):
    """A text stream whose ``flush`` does nothing; :meth:`really_flush` writes the buffer out."""

    def flush(self) -> None:
        pass

    def really_flush(self) -> None:
        super().flush()


def setup_logging(level: str, fmt: str, interval: float = 0.2) -> None:
    """mailcommon's logging for ``mailstore-api``, with the stdout handler buffered."""
    configure_logging("mailstore-api", level, fmt)
    stream = _DeferredFlush(
        io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "w", closefd=False), 1 << 16),
        encoding="utf-8",
        line_buffering=False,
        write_through=False,
    )
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    for handler in handlers:
        handler.setStream(stream)

    def flush() -> None:
        for handler in handlers:
            handler.acquire()
            try:
                stream.really_flush()
            except (OSError, ValueError):
                pass
            finally:
                handler.release()

    def flusher() -> None:
        while True:
            threading.Event().wait(interval)
            flush()

    threading.Thread(target=flusher, name="log-flush", daemon=True).start()
    atexit.register(flush)
