"""One imported message (``mailctl import``): stored once per account, through the delivery path.

The import key of a message is the sha256 of its Message-ID (empty when it has none) and of the
sha256 of the message as it is stored (LF line ends: a message imported from a CRLF mbox and from
a Maildir is one message). The ``imported`` table (migration 3) keeps the keys for good; the
delivery also carries an ``Idempotency-Key`` derived from it, so a crash between the delivery and
the row, or two requests at once, still store one copy (the committer's key, see
:mod:`mailstore_api.committer`). Quotas and durability are the delivery path's.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from mailstore_api.delivery import store_delivery
from mailstore_api.maildir import LineEndings
from mailstore_api.state import State, now_iso


def stored_form(message: bytes) -> bytes:
    """``message`` as the mailstore stores it (CRLF to LF, a final LF)."""
    lines = LineEndings()
    return lines.convert(message) + lines.finish()


def import_key(stored: bytes) -> str:
    """The import key of a message in its stored form."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(stored)
    message_id = str(headers.get("Message-ID", "")).strip()
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogateescape") + b"\n")
    digest.update(hashlib.sha256(stored).digest())
    return digest.hexdigest()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def import_message(
    state: State, address: str, message: bytes, received: float
) -> dict[str, Any]:
    """Store ``message`` for account ``address`` dated ``received`` unless it was imported
    before; ``{"id", "size", "imported"}`` (``imported`` false: it was there already)."""
    stored = stored_form(message)
    key = import_key(stored)
    known = await state.run_io(state.db.imported, address, key)
    if known is not None:
        return {"id": known, "size": len(stored), "imported": False}
    delivery_key = "import:" + hashlib.sha256(f"{address}\n{key}".encode()).hexdigest()
    answer = await store_delivery(
        state, [address], None, _once(stored), idempotency_key=delivery_key, received=received
    )
    await state.run_io(state.db.record_import, address, key, answer["id"], now_iso())
    return {"id": answer["id"], "size": answer["size"], "imported": True}
