"""The wire: reading command lines as bytes and formatting replies.

Command lines are limited to 255 octets including CRLF (RFC 2449 section 4); a longer line is
read to its end and discarded, and the caller answers ``-ERR``. Nothing here decodes text: a line
is bytes, so NUL and non-UTF-8 octets are just octets that no command accepts.
"""

from __future__ import annotations

import asyncio
from typing import Final

#: RFC 2449: "command lines ... MUST NOT exceed 255 octets, including the terminating CRLF".
MAX_COMMAND_LINE: Final = 255
#: RFC 2449: responses are limited to 512 octets including the terminating CRLF.
MAX_REPLY_LINE: Final = 512
#: SASL continuation lines may be longer than command lines (RFC 5034 section 4).
MAX_SASL_LINE: Final = 1024
#: The StreamReader's buffer limit: lines are never buffered much beyond this.
READER_LIMIT: Final = 2048


class LineTooLong(Exception):
    """The client sent a line longer than allowed (already consumed up to its end)."""


async def read_line(
    reader: asyncio.StreamReader, max_octets: int = MAX_COMMAND_LINE
) -> bytes | None:
    """The next line without its CRLF (or bare LF), or None at end of stream.

    Raises :class:`LineTooLong` when the line, with its line end, exceeds ``max_octets``; the whole
    line has then been consumed, so the next call reads the next line.
    """
    too_long = False
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None  # EOF, possibly in the middle of a line: nothing to act on
        except asyncio.LimitOverrunError as exc:
            # No LF within the reader's limit: drop what is buffered and keep reading the line.
            too_long = True
            await reader.readexactly(max(exc.consumed, 1))
            continue
        if too_long or len(line) > max_octets:
            raise LineTooLong
        if line.endswith(b"\r\n"):
            return line[:-2]
        return line[:-1]


def discard_buffered(reader: asyncio.StreamReader) -> int:
    """Drop whatever the client sent that has not been read yet; returns how many octets.

    Used by STLS (RFC 2595 section 3.2 / CVE-2011-0411 class of bugs): plaintext pipelined after
    the STLS command must never be executed inside the TLS session. asyncio has no public call for
    this, so it clears the StreamReader's buffer directly (the same pure-Python StreamReader on
    uvloop and on asyncio's loop; ``test_stls_discards_pipelined_commands`` runs on both). Should
    a new Python rename the buffer, this raises instead of letting the plaintext through.
    """
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray):
        raise RuntimeError("asyncio.StreamReader keeps no _buffer: cannot discard before TLS")
    n = len(buffer)
    buffer.clear()
    return n


def reply(ok: bool, text: str = "") -> bytes:
    """One status line, ``+OK text`` or ``-ERR text``, cut to 512 octets with its CRLF."""
    head = b"+OK" if ok else b"-ERR"
    line = head + (b" " + text.encode("utf-8", "replace") if text else b"")
    if len(line) > MAX_REPLY_LINE - 2:
        line = line[: MAX_REPLY_LINE - 2]
    return line + b"\r\n"


def multiline(first: bytes, lines: list[bytes]) -> bytes:
    """A status line followed by ``lines`` (dot-stuffed) and the terminating ``.``."""
    out = [first]
    for line in lines:
        out.append(b"." + line + b"\r\n" if line.startswith(b".") else line + b"\r\n")
    out.append(b".\r\n")
    return b"".join(out)
