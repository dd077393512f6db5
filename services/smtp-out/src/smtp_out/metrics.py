"""smtp-out's Prometheus metrics (served by :func:`mailcommon.metrics.exposed`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RESULTS = Counter(
    "maildrop_out_results_total",
    "Recipient results smtp-out reported (delivered, deferred, failed)",
    ["result"],
)
ENTRY_SECONDS = Histogram(
    "maildrop_out_entry_seconds",
    "Seconds one claimed queue entry took, every domain of it",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900),
)
