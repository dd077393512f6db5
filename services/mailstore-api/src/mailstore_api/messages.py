"""Reading messages for the admin API: summary headers for listings, full parse for one message.

Uses the standard library's ``email`` package with ``policy.default`` for the MIME structure;
header fields are read as text by :func:`header_text`, so a malformed one never fails a request.
"""

from __future__ import annotations

import datetime
import re
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

from mailauth.results import parse_our_results

from mailstore_api.maildir import MessageEntry

HEADER_LIMIT = 64 * 1024
SUMMARY_HEADERS = ("from", "to", "subject", "date")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def header_text(message: Message, name: str) -> str | None:
    """The first ``name`` field (lower case) of ``message`` as text, or None.

    Read from the field as stored, not through ``policy.default``'s header classes: parsing
    From and To as address lists was two thirds of indexing a delivered message (see
    "Search index on the delivery path" in bench/RESULTS.md), and a listing shows the text."""
    for key, value in message.raw_items():
        if key.lower() == name:
            return field_text(str(value))
    return None


def field_text(raw: str) -> str:
    """A raw field value as a person reads it: unfolded, octets read as UTF-8 (RFC 6532; the
    parser keeps them as surrogate escapes), RFC 2047 encoded words decoded (one that cannot be
    decoded is left as written)."""
    text = _FOLD.sub("", raw).strip().encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def _read_head(path: Path) -> bytes:
    """The header block (up to the blank line), at most HEADER_LIMIT octets."""
    with path.open("rb") as f:
        return head_of(f.read(HEADER_LIMIT))


def _spam(head: Message) -> dict[str, Any]:
    """smtp-in's spam flags (it removes a sender's own X-Spam fields before it adds its own)."""
    score_text = header_text(head, "x-spam-score")
    try:
        score = float(score_text) if score_text is not None else None
    except ValueError:
        score = None
    return {
        "flagged": (header_text(head, "x-spam") or "").strip().lower() == "yes",
        "score": score,
        "scanner_unavailable": header_text(head, "x-spam-checker") is not None,
    }


def verdicts(raw_head: bytes, head: Message, authserv_id: str) -> dict[str, Any]:
    """The authentication verdicts smtp-in wrote (our Authentication-Results) and its flags;
    ``head``: ``raw_head`` (or the whole message) parsed."""
    return {"authentication": parse_our_results(raw_head, authserv_id), "spam": _spam(head)}


def summary(entry: MessageEntry, authserv_id: str) -> dict[str, Any]:
    """One listing row: id, uidl, sizes, received time, the From/To/Subject/Date headers and
    the verdicts (``authserv_id``: MAIL_HOSTNAME, whose Authentication-Results are ours)."""
    try:
        raw_head: bytes | None = _read_head(entry.path)
    except FileNotFoundError:
        raw_head = None
    head = BytesHeaderParser(policy=policy.default).parsebytes(raw_head or b"")
    return summary_of(entry, raw_head, head, authserv_id)


def summary_of(
    entry: MessageEntry, raw_head: bytes | None, head: Message, authserv_id: str
) -> dict[str, Any]:
    """:func:`summary` of a message already read (``raw_head`` None: the file is gone) and
    parsed (``head``: its header block or the whole message)."""
    authentication = parse_our_results(raw_head or b"", authserv_id)
    return listing_fields(entry, raw_head, head) | {"authentication": authentication}


def listing_fields(entry: MessageEntry, raw_head: bytes | None, head: Message) -> dict[str, Any]:
    """:func:`summary_of` but the authentication verdicts (the costly part, see
    :func:`mailauth.results.verdicts_of_field`)."""
    row: dict[str, Any] = {
        "id": entry.id,
        "uidl": entry.id,
        "size": entry.size,
        "size_crlf": entry.size_crlf,
        "received": iso(entry.received),
    }
    for name in SUMMARY_HEADERS:
        row[name] = header_text(head, name) if raw_head is not None else None
    return row | {"spam": _spam(head)}


def _text_of(part: EmailMessage) -> str | None:
    try:
        content = part.get_content()
    except Exception:
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


def load(path: Path) -> EmailMessage:
    """The stored message at ``path``, parsed."""
    with path.open("rb") as f:
        message = BytesParser(policy=policy.default).parse(f)
    assert isinstance(message, EmailMessage)
    return message


def head_of(data: bytes) -> bytes:
    """A message's header block (up to the blank line), at most HEADER_LIMIT octets."""
    data = data[:HEADER_LIMIT]
    end = data.find(b"\n\n")
    return data if end < 0 else data[: end + 1]


def part(path: Path, index: int) -> EmailMessage | None:
    """The MIME leaf part numbered ``index`` as :func:`parse` numbers them, or None."""
    for number, found in enumerate(load(path).walk()):
        if number == index and not found.is_multipart():
            assert isinstance(found, EmailMessage)
            return found
    return None


def payload(found: Message) -> bytes:
    """A part's body with its transfer encoding undone: the octets of an attachment."""
    data = found.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def parse(path: Path, entry_id: str, authserv_id: str) -> dict[str, Any]:
    """Headers (in order), the MIME leaf parts with types and sizes, decoded text bodies, and
    the verdicts."""
    message = load(path)
    headers = [
        {"name": name, "value": header_text(message, name.lower()) or str(value)}
        for name, value in message.raw_items()
    ]
    parts: list[dict[str, Any]] = []
    for index, leaf in enumerate(message.walk()):
        if leaf.is_multipart():
            continue
        assert isinstance(leaf, EmailMessage)
        disposition = leaf.get_content_disposition()
        is_text = leaf.get_content_maintype() == "text" and disposition != "attachment"
        parts.append(
            {
                "index": index,
                "content_type": leaf.get_content_type(),
                "charset": leaf.get_content_charset(),
                "disposition": disposition,
                "filename": leaf.get_filename(),
                "size": len(payload(leaf)),
                "text": _text_of(leaf) if is_text else None,
            }
        )
    return {"id": entry_id, "headers": headers, "parts": parts} | verdicts(
        _read_head(path), message, authserv_id
    )
