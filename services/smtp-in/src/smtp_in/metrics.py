"""smtp-in's Prometheus metrics (served by :func:`mailcommon.metrics.exposed`).

A message's ``result`` is the ``result`` of its ``message`` log line (``delivered``, or why it was
refused: ``too_large``, ``over_quota``, ``dmarc_reject``, ...), plus the refusals made before the
handler sees a message (:data:`DATA_REFUSALS`). A recipient's is read from the reply to its RCPT.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

MESSAGES = Counter(
    "maildrop_smtp_messages_total", "Messages at the end of DATA, by outcome", ["result"]
)
RECIPIENTS = Counter("maildrop_smtp_recipients_total", "RCPT commands, by outcome", ["result"])
BYTES = Counter("maildrop_smtp_bytes_total", "Octets of the messages delivered, as received")
CONNECTIONS = Gauge("maildrop_smtp_connections", "Open SMTP connections")

#: The outcomes of the handler's ``message`` log line, bound once (others are bound when seen).
MESSAGE_RESULTS = (
    "delivered",
    "too_large",
    "over_quota",
    "insufficient_storage",
    "recipient_gone",
    "tempfail",
    "client_gone",
    "dmarc_reject",
    "auth_tempfail",
    "spam_reject",
    "spam_soft_reject",
    "spam_unavailable",
    "line_too_long",
    "no_memory",
)
_MESSAGES = {result: MESSAGES.labels(result) for result in MESSAGE_RESULTS}
_DELIVERED = _MESSAGES["delivered"]

#: aiosmtpd's own refusals at the end of DATA (the handler never sees these messages).
DATA_REFUSALS = {
    "552 Error: Too much mail data": "too_large",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "line_too_long",
}

#: A RCPT reply's code and enhanced code → the recipient's result.
_RCPT_RESULTS = {
    "250 2.1.5": "accepted",
    "550 5.1.1": "unknown_user",
    "550 5.7.1": "relay_denied",
    "452 4.5.3": "too_many_recipients",
    "452 4.2.2": "mailbox_full",
    "552 5.2.2": "over_quota",
    "451 4.3.0": "tempfail",
    "553 5.1.2": "bad_address",
    "501 5.1.3": "bad_address",
    "553 5.1.3": "bad_address",
    "553 5.6.7": "bad_address",
}
_RECIPIENTS = {code: RECIPIENTS.labels(result) for code, result in _RCPT_RESULTS.items()}
_OTHER_RECIPIENT = RECIPIENTS.labels("other")  # out of sequence, syntax, ...


def message(result: str, size: int) -> None:
    """One message's outcome; ``size``: its octets as received (counted when delivered)."""
    child = _MESSAGES.get(result)
    if child is None:
        child = _MESSAGES[result] = MESSAGES.labels(result)
    child.inc()
    if child is _DELIVERED:
        BYTES.inc(size)


def recipient(reply: str) -> None:
    """One RCPT, from the reply it got (``reply`` has its enhanced code already)."""
    _RECIPIENTS.get(reply[:9], _OTHER_RECIPIENT).inc()


def count_connections(count: Callable[[], int]) -> None:
    """Have :data:`CONNECTIONS` read ``count()`` at every scrape."""
    CONNECTIONS.set_function(count)
