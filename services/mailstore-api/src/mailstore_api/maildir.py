"""The Maildir store: one Maildir per account, ``DATA_DIR/mail/<domain>/<local part>``; every call
here is blocking.

File names are ``<secs>.<usecs><10 hex>.<host>,S=<stored octets>,W=<octets with CRLF>`` (at most
70 characters); the base name (before any ``:2,`` flags) is the message id. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailcommon.addresses import normalize_domain, split_address
from mailcommon.atomicfile import fsync_dir
from mailcommon.names import is_valid_message_id, is_valid_username

MAX_NAME = 70
TMP_MAX_AGE = 36 * 3600
_SIZES_RE = re.compile(r",S=(\d+),W=(\d+)(?:,|$)")
_TIME_RE = re.compile(r"(\d{1,12})\.(\d{6})")
_SUBDIRS = ("tmp", "new", "cur")


class UnknownMailbox(Exception):
    """The user's Maildir does not exist."""


@dataclass(frozen=True)
class MessageEntry:
    """One message in a listing, known from its name (and a stat only for foreign names)."""

    id: str
    path: Path
    size: int  # octets as stored (S)
    size_crlf: int  # octets with CRLF line ends (W): what POP3 reports
    received: float  # seconds since the epoch


def host_label(hostname: str) -> str:
    """The host part of message names: letters, digits, '-' and '_', at most 16 characters."""
    label = re.sub(r"[^A-Za-z0-9_-]", "-", hostname.split(".", maxsplit=1)[0] or "localhost")
    return label[:16] or "localhost"


# Uniqueness, not secrecy: a generator seeded once from os.urandom (a system call per name would
# cost a GIL hand-off in the delivery thread). Collisions are caught by O_EXCL and link() anyway.
_random = random.Random(secrets.token_bytes(32))


def base_name(host: str, received: float | None = None) -> str:
    """A new unique base name (without sizes), of the time now or of ``received`` (seconds since
    the epoch: an imported message keeps its date)."""
    micros = time.time_ns() // 1000 if received is None else round(received * 1_000_000)
    secs, usecs = divmod(micros, 1_000_000)
    return f"{secs}.{usecs:06d}{_random.getrandbits(40):010x}.{host}"


def final_name(base: str, stored: int, crlf: int) -> str:
    """``base`` with the sizes; the host part is shortened if the whole would exceed 70 chars."""
    suffix = f",S={stored},W={crlf}"
    excess = len(base) + len(suffix) - MAX_NAME
    if excess > 0:
        base = base[:-excess]
    return base + suffix


def message_id_of(filename: str) -> str:
    """The message id of a file in new/ or cur/: the name without Maildir info flags."""
    return filename.split(":2,", 1)[0]


def sizes_from_name(name: str) -> tuple[int, int] | None:
    match = _SIZES_RE.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _received_from_name(name: str) -> float | None:
    match = _TIME_RE.match(name)
    if not match:
        return None
    return int(match.group(1)) + int(match.group(2)) / 1_000_000


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class LineEndings:
    """CRLF -> LF on the fly, correct when a CR ends one chunk and its LF starts the next."""

    def __init__(self) -> None:
        self._pending_cr = False
        self._last = b""
        self.stored = 0
        self.lfs = 0

    def _emit(self, data: bytes) -> bytes:
        if data:
            self.stored += len(data)
            self.lfs += data.count(b"\n")
            self._last = data[-1:]
        return data

    def convert(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pending_cr = True
        return self._emit(chunk.replace(b"\r\n", b"\n"))

    def finish(self) -> bytes:
        """The tail: a held-back bare CR, and a final LF when the message lacks one."""
        tail = b"\r" if self._pending_cr else b""
        self._pending_cr = False
        if (tail or self._last)[-1:] != b"\n":
            tail += b"\n"
        return self._emit(tail)


class MailStore:
    """Blocking Maildir operations under ``root`` (``DATA_DIR/mail``)."""

    def __init__(self, root: Path, hostname: str) -> None:
        self.root = root
        self.host = host_label(hostname)
        root.mkdir(parents=True, exist_ok=True)

    def maildir(self, user: str) -> Path:
        """The Maildir of account ``user`` (``local@domain``, canonical)."""
        parts = split_address(user)
        # defence in depth: callers validate first; nothing here can leave the root
        if (
            parts is None
            or not is_valid_username(parts[0])
            or normalize_domain(parts[1]) != parts[1]
        ):
            raise UnknownMailbox(user)
        return self.root / parts[1] / parts[0]

    # -- mailboxes -------------------------------------------------------------------------------

    def create(self, user: str) -> None:
        box = self.maildir(user)
        if not box.parent.is_dir():
            box.parent.mkdir(exist_ok=True)
            fsync_dir(self.root)
        box.mkdir(exist_ok=True)
        for sub in _SUBDIRS:
            (box / sub).mkdir(exist_ok=True)
            fsync_dir(box / sub)
        fsync_dir(box)
        fsync_dir(box.parent)

    def exists(self, user: str) -> bool:
        return (self.maildir(user) / "new").is_dir()

    def remove(self, user: str) -> None:
        """Delete the Maildir and everything in it (moved aside first, so deliveries stop at once)."""
        box = self.maildir(user)
        trash = self.root / f".trash-{user}-{secrets.token_hex(4)}"
        try:
            box.rename(trash)
        except FileNotFoundError:
            return
        fsync_dir(box.parent)
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def remove_domain(self, domain: str) -> None:
        """Remove a domain's folder once its Maildirs are gone (left alone if anything remains)."""
        with contextlib.suppress(FileNotFoundError, OSError):
            (self.root / domain).rmdir()
            fsync_dir(self.root)

    def _staged(self, source: str) -> Path:
        return self.root / f".moving-{source}"

    def stage(self, source: str, target: str) -> None:
        """The first step of a migration's move (``maildir_moves``), made for every move before
        any :meth:`move`: the Maildir ``source`` aside, out of the way of the domain folders (an
        old user may be named like a domain: ``mail/example.org/`` was the Maildir of the user
        ``example.org``). Done again after a crash, it finds the step made and does nothing."""
        old, staged = self.root / source, self._staged(source)
        if old.is_dir() and not staged.exists() and not (self.root / target).exists():
            old.rename(staged)
            fsync_dir(self.root)

    def move(self, source: str, target: str) -> None:
        """The second step: the staged Maildir to ``target``; done again after a crash, it
        finds the move made and does nothing. Message files keep their names (UIDLs)."""
        staged, new = self._staged(source), self.root / target
        if not new.parent.is_dir():
            new.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root)
        if staged.is_dir() and not new.exists():
            staged.rename(new)
        fsync_dir(new.parent)
        fsync_dir(self.root)

    def start_up(self, max_age: float = TMP_MAX_AGE) -> int:
        """Remove leftovers: moved-aside Maildirs and tmp/ files older than ``max_age`` seconds.

        The server passes 0: it holds the volume lock, so nothing else can be writing in a tmp/.
        """
        removed = 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self.root):
            if entry.name.startswith(".trash-"):
                shutil.rmtree(entry.path, ignore_errors=True)
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            for box in os.scandir(entry.path):
                tmp = Path(box.path) / "tmp"
                if not tmp.is_dir():
                    continue
                for item in os.scandir(tmp):
                    with contextlib.suppress(FileNotFoundError):
                        if item.is_file(follow_symlinks=False) and item.stat().st_mtime <= cutoff:
                            os.unlink(item.path)
                            removed += 1
        return removed

    # -- delivery --------------------------------------------------------------------------------

    def open_tmp(self, user: str) -> tuple[int, Path]:
        """Create a new, exclusive file in ``user``'s tmp/."""
        tmp = self.maildir(user) / "tmp"
        while True:
            path = tmp / base_name(self.host)
            try:
                return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
            except FileExistsError:
                continue
            except FileNotFoundError as exc:
                raise UnknownMailbox(user) from exc

    # -- reading ---------------------------------------------------------------------------------

    def messages(self, user: str) -> list[MessageEntry]:
        """The messages in new/ and cur/, oldest first. Never opens our files (sizes from names)."""
        box = self.maildir(user)
        entries: list[MessageEntry] = []
        for sub in ("new", "cur"):
            try:
                items = list(os.scandir(box / sub))
            except FileNotFoundError as exc:
                raise UnknownMailbox(user) from exc
            for item in items:
                entry = self._entry(item)
                if entry is not None:
                    entries.append(entry)
        entries.sort(key=lambda e: (e.received, e.id))
        return entries

    def _entry(self, item: os.DirEntry[str]) -> MessageEntry | None:
        mid = message_id_of(item.name)
        if not is_valid_message_id(mid):
            return None
        try:
            return _described(mid, Path(item.path), item.stat)
        except FileNotFoundError:
            return None

    def entry(self, user: str, message_id: str) -> MessageEntry | None:
        """The listing entry of one message (as :meth:`messages` has it), or None."""
        path = self.find(user, message_id)
        if path is None:
            return None
        try:
            return _described(message_id, path, path.stat)
        except FileNotFoundError:
            return None

    def find(self, user: str, message_id: str) -> Path | None:
        """The file of ``message_id`` in new/ or cur/, or None."""
        if not is_valid_message_id(message_id):
            return None
        box = self.maildir(user)
        for candidate in (box / "new" / message_id, box / "cur" / message_id):
            if candidate.is_file():
                return candidate
        prefix = message_id + ":2,"
        try:
            for item in os.scandir(box / "cur"):
                if item.name.startswith(prefix):
                    return Path(item.path)
        except FileNotFoundError as exc:
            raise UnknownMailbox(user) from exc
        return None

    def delete(self, user: str, message_ids: list[str]) -> Deleted:
        """Unlink messages; directories are fsynced once."""
        result = Deleted([], [], 0)
        for mid in dict.fromkeys(message_ids):
            path = self.find(user, mid)
            if path is None:
                result.gone.append(mid)
                continue
            sizes = sizes_from_name(mid)
            try:
                size = sizes[0] if sizes is not None else path.stat().st_size
                os.unlink(path)
            except FileNotFoundError:
                result.gone.append(mid)
                continue
            result.deleted.append(mid)
            result.octets += size
        if result.deleted:
            box = self.maildir(user)
            fsync_dir(box / "new")
            fsync_dir(box / "cur")
        return result


@dataclass
class Deleted:
    """What :meth:`MailStore.delete` did: the ids deleted, those already gone, octets freed."""

    deleted: list[str]
    gone: list[str]
    octets: int


def _described(mid: str, path: Path, stat: Callable[[], os.stat_result]) -> MessageEntry:
    """The entry of the file at ``path``; ``stat`` only for a name without time or sizes."""
    sizes = sizes_from_name(mid)
    received = _received_from_name(mid)
    if received is None:
        received = stat().st_mtime
    if sizes is None:  # a file some other tool put here: count once
        sizes = _measure(path)
    return MessageEntry(mid, path, sizes[0], sizes[1], received)


def _measure(path: Path) -> tuple[int, int]:
    stored = lfs = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            stored += len(chunk)
            lfs += chunk.count(b"\n")
    return stored, stored + lfs
