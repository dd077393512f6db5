"""pop3's Prometheus metrics (served by :func:`mailcommon.metrics.exposed`).

A login's ``result``: ``ok``, or the reason of its ``refusal`` log line (``bad`` for wrong
credentials, ``throttled``, ``in_use``, ``redis_unavailable``, ...). A session's: the ``result``
of its ``session`` log line, without what follows a colon (``connection_error:...`` is
``connection_error``). Messages retrieved and deleted are added when their session ends.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

SESSIONS = Counter("maildrop_pop3_sessions_total", "POP3 sessions ended, by outcome", ["result"])
LOGINS = Counter("maildrop_pop3_logins_total", "POP3 login attempts, by outcome", ["result"])
RETRIEVED = Counter("maildrop_pop3_messages_retrieved_total", "Messages sent whole (RETR)")
DELETED = Counter("maildrop_pop3_messages_deleted_total", "Messages expunged at QUIT")
CONNECTIONS = Gauge("maildrop_pop3_connections", "Open POP3 connections")

# Refusal reasons as logged → the login's result.
_RENAMED = {"bad_credentials": "bad"}
_LOGINS = {
    result: LOGINS.labels(result)
    for result in ("ok", "bad", "throttled", "in_use", "redis_unavailable", "plaintext_refused")
}
_SESSIONS = {
    result: SESSIONS.labels(result)
    for result in ("quit", "disconnected", "timeout", "aborted", "connection_error", "shutdown")
}


def _child(children: dict[str, Counter], metric: Counter, result: str) -> Counter:
    child = children.get(result)
    if child is None:
        child = children[result] = metric.labels(result)
    return child


def login(reason: str) -> None:
    """One login's outcome: ``ok`` or a refusal reason."""
    result = reason.partition(":")[0]
    _child(_LOGINS, LOGINS, _RENAMED.get(result, result)).inc()


def session(result: str, retrieved: int, deleted: int) -> None:
    """One session's end, with the messages it retrieved and deleted."""
    _child(_SESSIONS, SESSIONS, result.partition(":")[0]).inc()
    if retrieved:
        RETRIEVED.inc(retrieved)
    if deleted:
        DELETED.inc(deleted)


def count_connections(count: Callable[[], int]) -> None:
    """Have :data:`CONNECTIONS` read ``count()`` at every scrape."""
    CONNECTIONS.set_function(count)
