"""The mailstore's Prometheus metrics, served at ``/metrics`` on the API port (admin token or
``METRICS_TOKEN``; see :mod:`mailstore_api.middleware`).

A delivery's ``result``: ``stored``, ``replayed`` (its ``Idempotency-Key`` was stored before), the
``code`` of the error it was answered with (``unknown_user``, ``quota_exceeded``, ...), or
``failed`` (the client went away before the end of the body, or an error answered 500).
``maildrop_delivery_seconds`` runs from the request to the message being durable in every
recipient's Maildir.

The outbound queue: ``maildrop_queue_entries`` (messages in it now), enqueues by outcome
(``stored``, ``replayed``) and per-recipient results (``delivered``, ``deferred``, ``failed``,
``expired``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "maildrop_deliveries_total",
    "Deliveries to the Maildirs (SMTP and imports), by outcome",
    ["result"],
)
DELIVERY_SECONDS = Histogram(
    "maildrop_delivery_seconds",
    "Seconds from a delivery's request until the message is durable",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMIT_BATCH_SIZE = Histogram(
    "maildrop_commit_batch_size",
    "Deliveries made durable together by one group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
ACME_FAILURES = Counter(
    "maildrop_acme_renewal_failures_total", "ACME orders (first or renewal) that failed"
)

QUEUE_ENTRIES = Gauge("maildrop_queue_entries", "Messages in the outbound queue")
QUEUE_ENQUEUED = Counter(
    "maildrop_queue_enqueued_total", "Enqueues into the outbound queue, by outcome", ["result"]
)
QUEUE_RESULTS = Counter(
    "maildrop_queue_results_total",
    "Per-recipient results of the outbound queue (delivered, deferred, failed, expired)",
    ["result"],
)

_DELIVERIES = {result: DELIVERIES.labels(result) for result in ("stored", "replayed", "failed")}


def delivery(result: str) -> None:
    """One delivery's outcome."""
    child = _DELIVERIES.get(result)
    if child is None:
        child = _DELIVERIES[result] = DELIVERIES.labels(result)
    child.inc()


def queue_enqueued(result: str) -> None:
    """One enqueue: ``stored`` or ``replayed``."""
    QUEUE_ENQUEUED.labels(result).inc()


def queue_result(result: str) -> None:
    """One recipient's result: ``delivered``, ``deferred``, ``failed`` or ``expired``."""
    QUEUE_RESULTS.labels(result).inc()
