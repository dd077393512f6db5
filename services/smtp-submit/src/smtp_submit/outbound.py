"""Recipients outside this server's domains.

The one place submission decides what happens to a remote recipient. The durable outbound
queue (issue 18) is not part of this service yet: until it is, a remote recipient is refused at
RCPT, so nothing is accepted that could not be sent. The queue replaces :func:`remote_recipient`
with the enqueue decision (accept the recipient and hand the message to the queue at DATA).
"""

from __future__ import annotations

REMOTE_REFUSED = "550 5.7.1 Sending to other domains is not available yet"


def remote_recipient(address: str) -> str:
    """The RCPT reply for ``address``, whose domain the mailstore does not host (for now, always
    the refusal; the outbound queue makes it accept and remember the recipient)."""
    return REMOTE_REFUSED
