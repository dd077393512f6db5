"""Several stored messages in one response (``POST /internal/v1/mailboxes/{u}/messages/batch``).

pop3 prefetches the small messages a client is about to RETR one after the other: one HTTP round
trip and ONE worker-thread hop for up to :data:`MAX_IDS` messages of at most :data:`MAX_BYTES`
stored octets in all, instead of a request (and its thread hops) per message. All or nothing: any
id that is not (or no longer) in the mailbox makes the whole call 404 ``unknown_message``, and the
caller falls back to single-message reads.
"""

from __future__ import annotations

import os
import stat

from mailcommon.names import is_valid_message_id

from mailstore_api.maildir import MailStore

#: At most this many ids per call.
MAX_IDS = 256
#: At most this many stored octets per call (the sum of the messages' S).
MAX_BYTES = 1024 * 1024
#: Response header with the stored size of each message, comma-separated, in request order.
SIZES_HEADER = "X-Message-Sizes"


class BatchMissing(Exception):
    """One of the ids is not in new/ or cur/ (never was, or was deleted)."""


class BatchTooLarge(Exception):
    """The messages together exceed :data:`MAX_BYTES`."""


def read_batch(store: MailStore, user: str, ids: list[str]) -> tuple[list[int], bytes]:
    """The stored bytes of ``ids``, concatenated in order, with each one's length. Blocking:
    run it in one worker thread. ``UnknownMailbox`` propagates."""
    sizes: list[int] = []
    parts: list[bytes] = []
    total = 0
    new = f"{store.maildir(user)}/new/"
    for message_id in ids:
        if not is_valid_message_id(message_id):  # no "/", no "..": a name inside new/ or cur/
            raise BatchMissing(message_id)
        try:  # where a delivered message is until another Maildir tool moves it
            fd = os.open(new + message_id, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = _open_elsewhere(store, user, message_id)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a directory of that name: not a message
                raise BatchMissing(message_id)
            size = st.st_size
            total += size
            if total > MAX_BYTES:
                raise BatchTooLarge(message_id)
            data = _read_exactly(fd, size)
        finally:
            os.close(fd)
        sizes.append(len(data))
        parts.append(data)
    return sizes, b"".join(parts)


def _open_elsewhere(store: MailStore, user: str, message_id: str) -> int:
    """The message in cur/ (with or without flags), as :meth:`MailStore.find` looks for it."""
    path = store.find(user, message_id)
    if path is None:
        raise BatchMissing(message_id)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BatchMissing(message_id) from None


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:  # the file shrank (nothing of ours rewrites a message): take what is there
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
