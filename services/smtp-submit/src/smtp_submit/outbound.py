"""Recipients outside this server's domains, and the key that stores a submission once.

A recipient whose domain the mailstore does not host is accepted at RCPT and kept apart from
the local ones; at the end of DATA the message goes to the mailstore's durable outbound queue
for them (``MailstoreClient.enqueue``), worked by smtp-out, before the local copy is delivered
and before the 250.

The idempotency key of both stores (the queue's and the mailboxes') is
:func:`submission_key`: for a message that carries its own ``Message-ID:`` it is a digest of
the account, the envelope and the message as the client sent it, so a client that retries after
a 451 (a new transaction, a new transaction id) is answered with the first store's result
instead of a second copy; for a message without one (we add a fresh Message-ID, so two such
messages are two messages) it is the transaction id, which still covers the client library's
own resend after a dropped HTTP connection.
"""

from __future__ import annotations

import hashlib

from mailauth.headers import has_field

REMOTE_ACCEPTED = "250 2.1.5 Ok"
_MESSAGE_ID = frozenset({b"message-id"})


def remote_recipient(address: str) -> str:
    """The RCPT reply for ``address``, whose domain the mailstore does not host: accepted for
    the outbound queue (the caller keeps it apart from the local recipients)."""
    return REMOTE_ACCEPTED


def submission_key(
    *,
    account: str,
    sender: str,
    local: list[str],
    remote: list[str],
    content: bytes,
    transaction_id: str,
) -> str:
    """The ``Idempotency-Key`` of the transaction's enqueue and local delivery (see above)."""
    if not has_field(content, _MESSAGE_ID):
        return transaction_id
    digest = hashlib.sha256()
    for part in (account, sender, *sorted(local), "\0", *sorted(remote)):
        digest.update(part.encode("utf-8", errors="surrogateescape") + b"\0")
    digest.update(content)
    return f"submit-{digest.hexdigest()}"
