"""Logging set-up: mailcommon's JSON lines, written through a buffer flushed a few times a second.

The standard library's StreamHandler flushes after every record: one ``write`` system call per
request on the event loop thread, where each system call gives the GIL away to the worker threads
doing fsyncs and costs up to a switch interval to get it back. Buffering makes that a few writes
per second. The price: a process killed with SIGKILL loses at most ``interval`` seconds of log
lines; a normal exit flushes.
"""

from __future__ import annotations

import atexit
import datetime
import io
import json
import logging
import sys
import threading
from typing import Any

import structlog
from mailcommon.logging import configure_logging, get_logger

_access = get_logger("mailstore_api.access")
_fast: tuple[logging.Handler, io.TextIOBase] | None = None


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
    global _fast
    if fmt == "json" and len(handlers) == 1:
        _fast = (handlers[0], stream)

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


def access_line(fields: dict[str, Any]) -> None:
    """Log one access line: the same JSON object structlog would write, without its machinery.

    (The access line is written for every request, the delivery path's most frequent cost after
    the file system.) Falls back to structlog for the console format or before set-up.
    """
    if not logging.getLogger("mailstore_api.access").isEnabledFor(logging.INFO):
        return
    if _fast is None:
        _access.info("request", **fields)
        return
    handler, stream = _fast
    record = {
        **fields,
        "event": "request",
        **structlog.contextvars.get_contextvars(),
        "level": "info",
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    line = json.dumps(record, default=str) + "\n"
    handler.acquire()
    try:
        stream.write(line)
    finally:
        handler.release()
