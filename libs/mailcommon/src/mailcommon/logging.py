"""Structured logging: one JSON object per line on stdout, with context variables merged in.

Bind a session or request id with ``structlog.contextvars.bind_contextvars`` and every line logged
in that task carries it.

Output is buffered and written out :data:`FLUSH_INTERVAL` times a second by a small thread: the
standard library's StreamHandler flushes after every record, one ``write`` system call per
message, session or request on the event loop's thread (each one also hands the GIL to another
thread and waits to get it back). The price: a process killed with SIGKILL loses at most the last
``FLUSH_INTERVAL`` seconds of lines; every normal exit flushes (``atexit``).
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import threading
import time
from typing import Any

import structlog

#: Seconds between two writes of the buffered log output.
FLUSH_INTERVAL = 0.2


class _DeferredFlush(io.TextIOWrapper):
    """A text stream whose ``flush`` does nothing; :meth:`really_flush` writes the buffer out."""

    def flush(self) -> None:
        pass

    def really_flush(self) -> None:
        super().flush()


def _buffered_stdout(handler: logging.StreamHandler[Any]) -> _DeferredFlush:
    """stdout behind a 64 KiB buffer that a daemon thread (and ``atexit``) writes out."""
    stream = _DeferredFlush(
        io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "w", closefd=False), 1 << 16),
        encoding="utf-8",
        line_buffering=False,
        write_through=False,
    )

    def flush() -> None:
        handler.acquire()
        try:
            stream.really_flush()
        except (OSError, ValueError):  # stdout closed or gone: nothing more can be said
            pass
        finally:
            handler.release()

    def flusher() -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            flush()

    threading.Thread(target=flusher, name="log-flush", daemon=True).start()
    atexit.register(flush)
    return stream


def configure_logging(
    service: str, level: str = "INFO", fmt: str = "json"
) -> logging.StreamHandler[Any]:
    """Route structlog and the standard library's logging through one JSON (or console) renderer,
    written to buffered stdout; returns the one handler (its ``stream`` takes whole lines)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler: logging.StreamHandler[Any] = logging.StreamHandler()
    handler.setStream(_buffered_stdout(handler))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    return handler


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger; ``name`` is the module's ``__name__``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
