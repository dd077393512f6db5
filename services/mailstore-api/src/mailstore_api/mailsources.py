"""Mail to import and mail exported, on the ``mailctl`` side: a Maildir or an mbox file read as
(message, date) pairs, and an mbox written (blocking; no server involved).

- Maildir: every file of ``new/`` and ``cur/`` (names starting with a dot skipped, as the Maildir
  rules say), dated by its modification time (what Maildir readers, ``mailbox.MaildirMessage``
  among them, take as the delivery date). Read with :func:`os.scandir`: ``mailbox.Maildir`` would
  give the same bytes but only a parsed message has the date.
- mbox: :class:`mailbox.mbox` finds the messages (``From `` lines, the blank separator line
  dropped) and returns their bytes as written, with ``>From `` still escaped: it unescapes nothing
  when reading, and when writing it escapes only ``From `` (mboxo). :func:`unescape` undoes the
  escaping, mboxrd (``>>From `` loses one ``>``) by default, or mboxo (only ``>From ``). The date
  is the ``From `` line's (asctime, UTC), else the ``Date:`` header's, else the file's mtime.
- Export: :func:`write_mbox` writes mboxrd through :class:`mailbox.mbox`: a ``>``-quoted
  ``From `` line gets one more ``>`` here, and ``mailbox`` itself quotes ``From ``, so every such
  line reads back exactly with :func:`unescape` in mboxrd mode.
"""

from __future__ import annotations

import calendar
import email.utils
import mailbox
import os
import re
import time
from collections.abc import Iterable, Iterator
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Literal, NamedTuple

MboxFormat = Literal["mboxrd", "mboxo"]
_QUOTED = {
    "mboxrd": re.compile(rb"^>(>*From )", re.MULTILINE),
    "mboxo": re.compile(rb"^>(From )", re.MULTILINE),
}
_TO_QUOTE = re.compile(rb"^(>+From )", re.MULTILINE)
_ASCTIME = re.compile(r"(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\s*$")


class SourceMessage(NamedTuple):
    data: bytes
    received: float  # seconds since the epoch


def is_maildir(path: Path) -> bool:
    return path.is_dir() and ((path / "new").is_dir() or (path / "cur").is_dir())


def read_maildir(path: Path) -> Iterator[SourceMessage]:
    """The messages of ``new/`` and ``cur/``, oldest first."""
    entries: list[os.DirEntry[str]] = []
    for sub in ("new", "cur"):
        if (path / sub).is_dir():
            entries += [
                e for e in os.scandir(path / sub) if not e.name.startswith(".") and e.is_file()
            ]
    entries.sort(key=lambda e: (e.stat().st_mtime, e.name))
    for entry in entries:
        yield SourceMessage(Path(entry.path).read_bytes(), entry.stat().st_mtime)


def unescape(data: bytes, fmt: MboxFormat = "mboxrd") -> bytes:
    """Undo the ``>From `` quoting of an mbox message body."""
    return _QUOTED[fmt].sub(rb"\1", data)


def from_line_date(line: bytes) -> float | None:
    """The date of a ``From sender date`` line (asctime, taken as UTC), or None."""
    match = _ASCTIME.search(line.decode("ascii", "replace"))
    if match is None:
        return None
    try:
        return float(calendar.timegm(time.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return None


def header_date(data: bytes) -> float | None:
    """The ``Date:`` header's time, or None."""
    value = BytesHeaderParser(policy=compat32).parsebytes(data).get("Date")
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def read_mbox(path: Path, fmt: MboxFormat = "mboxrd") -> Iterator[SourceMessage]:
    """The messages of the mbox file ``path``, in file order, unescaped."""
    box = mailbox.mbox(path, create=False)
    fallback = path.stat().st_mtime
    try:
        for key in box.iterkeys():
            raw = box.get_bytes(key, from_=True)
            from_line, _, body = raw.partition(b"\n")
            data = unescape(body, fmt)
            received = from_line_date(from_line) or header_date(data) or fallback
            yield SourceMessage(data, received)
    finally:
        box.close()


def read_source(path: Path, fmt: MboxFormat = "mboxrd") -> Iterator[SourceMessage]:
    """A Maildir (a directory with ``new/`` or ``cur/``) or an mbox file."""
    if is_maildir(path):
        return read_maildir(path)
    if path.is_file():
        return read_mbox(path, fmt)
    raise ValueError(f"{path} is neither a Maildir (with new/ or cur/) nor an mbox file")


def write_mbox(path: Path, messages: Iterable[SourceMessage]) -> int:
    """Append ``messages`` to the mbox file ``path`` (mboxrd); returns how many."""
    box = mailbox.mbox(path, create=True)
    count = 0
    box.lock()
    try:
        for message in messages:
            stamp = time.asctime(time.gmtime(message.received)).encode()
            quoted = _TO_QUOTE.sub(rb">\1", message.data)
            box.add(b"From MAILER-DAEMON " + stamp + b"\n" + quoted)
            count += 1
        box.flush()
    finally:
        box.unlock()
        box.close()
    return count
