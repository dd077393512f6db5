"""Online backup of the volume as one tar stream (blocking; the REST API runs it in a thread).

Why a tar (stdlib :mod:`tarfile`, POSIX pax format): it can be written as a stream, one member
after the other, with nothing to seek back to (each message's size is known before its header
from ``fstat`` of the open file, and messages never change once in ``new/``), so
``GET /api/v1/backup`` and ``mailctl backup -`` need no space of their own; pax headers carry
names of any length and exact modification times; and any ``tar`` can read it: unpacked into an
empty ``DATA_DIR`` it is a volume, so a backup is usable even without this program. No
compression: a pipe through ``zstd`` is the operator's choice, and would cost the MB/s that
matters here (``bench/backup_bench.py``).

Layout, in this order: ``users.sqlite3`` and ``deliveries.sqlite3`` (SQLite's online backup API,
each a consistent copy taken while the mailstore writes), ``mail/<domain>/<local>/{new,cur}/<name>``
(file names kept: they are the POP3 UIDLs), ``manifest.json`` (every file's path, size and
sha256, and every Maildir, so empty ones are restored too), and ``manifest.json.sha256`` (the
manifest's own digest). The manifest comes last because the digests are known only once every
file was read.

Consistency: the databases are copied first, then the Maildirs of the accounts in that copy are
listed. A message acknowledged (201, so SMTP 250) before the backup started is in ``new/`` or
``cur/`` by then, so it is in the backup unless it was deleted meanwhile. Only ``new/`` and
``cur/`` are read, never ``tmp/``: a file there is whole (it was linked in after its data was
durable), and a file opened stays whole even when a POP3 expunge unlinks it while it is read;
one unlinked before it is opened is left out. Either way nothing partial is written.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mailcommon.names import is_valid_message_id

from mailstore_api import tarheader
from mailstore_api.db import DATABASE_FILE
from mailstore_api.maildir import MailStore, message_id_of
from mailstore_api.migrations import version

#: The delivery keys' database, next to :data:`~mailstore_api.db.DATABASE_FILE`.
KEYS_FILE = "deliveries.sqlite3"
DATABASES = (DATABASE_FILE, KEYS_FILE)
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.json.sha256"
FORMAT = "maildrop-backup"
FORMAT_VERSION = 1
CHUNK = 1 << 20


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class _TarStream:
    """The tar stream: :mod:`tarfile`'s own headers (pax format: a name of any length; made by
    :func:`~mailstore_api.tarheader.header`), each followed by the file's octets and NULs to the
    next 512-octet block, and at the end two zero blocks and NULs to a whole 10 KiB record, as
    ``TarFile.close`` writes them.

    Framed here rather than with ``TarFile.addfile``, which per file copies the ``TarInfo`` and
    reads through ``copyfileobj`` and a file object: with messages of a few KiB that overhead made
    the backup 1.2 to 2.4 times slower in the same run (and its ``w|`` stream mode re-slices its
    buffer per record). :mod:`tarfile` reads the result back (``mailctl verify``), as GNU tar does.
    """

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def header(self, name: str, size: int, mtime: float) -> None:
        # Whole seconds: a fraction would cost a pax header per file.
        self._write(tarheader.header(name, size, int(mtime)))

    def data(self, data: bytes) -> None:
        self._write(data)

    def pad(self, size: int) -> None:
        self._write(bytes(-size % tarfile.BLOCKSIZE))

    def add(self, name: str, data: bytes, mtime: float) -> str:
        """A member held in memory; its sha256."""
        self.header(name, len(data), mtime)
        self._write(data)
        self.pad(len(data))
        return hashlib.sha256(data).hexdigest()

    def close(self) -> None:
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        self._write(bytes(-self._written % tarfile.RECORDSIZE))


@dataclass
class Manifest:
    """What ``manifest.json`` holds."""

    created_at: str
    schema_version: int
    maildirs: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created_at": self.created_at,
            "schema_version": self.schema_version,
            "maildirs": self.maildirs,
            "files": self.files,
        }
        return json.dumps(body).encode() + b"\n"


def snapshot(path: Path) -> bytes:
    """A consistent copy of the SQLite database at ``path`` (online backup API), as file bytes.

    The copy's header still says WAL (bytes 18 and 19 are 2, copied from the source), which an
    in-memory database cannot be: they are set to 1 (rollback journal), as ``PRAGMA
    journal_mode=DELETE`` would on a file; the mailstore turns WAL on again when it opens it."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = sqlite3.connect(":memory:")
    try:
        source.backup(target)
        data = bytearray(target.serialize())
        data[18:20] = b"\x01\x01"
        return bytes(data)
    finally:
        source.close()
        target.close()


def _accounts(database: bytes) -> tuple[int, list[str]]:
    """The schema version and account addresses of a database copy."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(database)
        rows = conn.execute("SELECT address FROM accounts ORDER BY address").fetchall()
        return version(conn), [row[0] for row in rows]
    finally:
        conn.close()


def write_backup(data_dir: Path, store: MailStore, out: Writable) -> Manifest:
    """Write the backup of ``data_dir`` to ``out``; returns its manifest."""
    databases = {name: snapshot(data_dir / name) for name in DATABASES}
    schema, addresses = _accounts(databases[DATABASE_FILE])
    manifest = Manifest(datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), schema)
    tar = _TarStream(out)
    now = time.time()
    for name, data in databases.items():
        manifest.files.append({"path": name, "size": len(data), "sha256": tar.add(name, data, now)})
    for address in addresses:
        box = store.maildir(address)
        relative = box.relative_to(data_dir).as_posix()
        manifest.maildirs.append(relative)
        # Plain strings per file: a Path per file cost about a tenth of the time (cProfile).
        for sub, filename in _messages(str(box)):
            entry = _add_file(tar, f"{relative}/{sub}/{filename}", f"{box}/{sub}/{filename}")
            if entry is not None:
                manifest.files.append(entry)
    body = manifest.to_bytes()
    digest = tar.add(MANIFEST, body, now)
    tar.add(MANIFEST_DIGEST, f"{digest}  {MANIFEST}\n".encode(), now)
    tar.close()
    return manifest


def _messages(box: str) -> Iterator[tuple[str, str]]:
    """(``new`` or ``cur``, file name) of each message as listed (some may be gone by now)."""
    for sub in ("new", "cur"):
        try:
            names = sorted(os.listdir(f"{box}/{sub}"))
        except FileNotFoundError:  # the account was deleted after the database copy
            continue
        for name in names:
            if is_valid_message_id(message_id_of(name)):
                yield sub, name


def _add_file(tar: _TarStream, name: str, path: str) -> dict[str, Any] | None:
    """One message file, read whole; its manifest entry, or None when it is gone already."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # expunged since the listing: absent, as it is now
        return None
    try:
        stat = os.fstat(fd)
        tar.header(name, stat.st_size, stat.st_mtime)
        digest = hashlib.sha256()
        left = stat.st_size
        while left > 0:
            data = os.read(fd, min(left, CHUNK))
            if not data:  # cannot happen to a message (never rewritten): end the backup broken
                raise OSError(f"{path} shrank while it was read")
            digest.update(data)
            tar.data(data)
            left -= len(data)
        tar.pad(stat.st_size)
    finally:
        os.close(fd)
    return {"path": name, "size": stat.st_size, "sha256": digest.hexdigest()}
