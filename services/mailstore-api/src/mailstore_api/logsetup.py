"""Logging set-up of the mailstore: mailcommon's buffered JSON lines, and a lean access line."""

from __future__ import annotations

import datetime
import io
import json
import logging
from typing import Any

import structlog
from mailcommon.logging import configure_logging, get_logger

_access = get_logger("mailstore_api.access")
_fast: tuple[logging.Handler, io.TextIOBase] | None = None


def setup_logging(level: str, fmt: str) -> None:
    """mailcommon's logging for ``mailstore-api``; JSON access lines skip structlog."""
    handler = configure_logging("mailstore-api", level, fmt)
    global _fast
    if fmt == "json":
        _fast = (handler, handler.stream)


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
