"""smtp-submit's Prometheus metrics (served by :func:`mailcommon.metrics.exposed`)."""

from __future__ import annotations

from prometheus_client import Counter

MESSAGES = Counter(
    "maildrop_submit_messages_total",
    "Submitted messages at the end of DATA, by outcome",
    ["result"],
)
LOGINS = Counter("maildrop_submit_logins_total", "AUTH attempts, by outcome", ["result"])
BYTES = Counter("maildrop_submit_bytes_total", "Octets of the messages delivered, as received")


def message(result: str, size: int) -> None:
    MESSAGES.labels(result).inc()
    if result == "delivered":
        BYTES.inc(size)


def login(result: str) -> None:
    LOGINS.labels(result).inc()
