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
import io
import json
import os
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mailcommon.names import is_valid_message_id

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


class _Counting:
    """The output as :mod:`tarfile` wants it in ``w`` mode: ``write`` and ``tell``, no seeking
    (its ``w|`` stream mode re-slices its buffer per 10 KiB record: several times slower)."""

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._written = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written


class _Hashing:
    """A file read through, its sha256 computed on the way."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data


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
    with tarfile.TarFile(
        fileobj=_Counting(out),  # type: ignore[arg-type]
        mode="w",
        format=tarfile.PAX_FORMAT,
        copybufsize=CHUNK,
    ) as tar:
        for name, data in databases.items():
            _add(tar, manifest, name, io.BytesIO(data), size=len(data), mtime=time.time())
        for address in addresses:
            box = store.maildir(address)
            relative = box.relative_to(data_dir).as_posix()
            manifest.maildirs.append(relative)
            for path in _messages(box, address):
                _add_file(tar, manifest, f"{relative}/{path.parent.name}/{path.name}", path)
        body = manifest.to_bytes()
        now = time.time()
        _add(tar, None, MANIFEST, io.BytesIO(body), size=len(body), mtime=now)
        digest = (hashlib.sha256(body).hexdigest() + "  " + MANIFEST + "\n").encode()
        _add(tar, None, MANIFEST_DIGEST, io.BytesIO(digest), size=len(digest), mtime=now)
    return manifest


def _messages(box: Path, address: str) -> Iterator[Path]:
    """The message files of ``new/`` and ``cur/`` (names as listed; some may be gone by now)."""
    for sub in ("new", "cur"):
        try:
            names = sorted(os.listdir(box / sub))
        except FileNotFoundError:  # the account was deleted after the database copy
            continue
        for name in names:
            if is_valid_message_id(message_id_of(name)):
                yield box / sub / name


def _add_file(tar: tarfile.TarFile, manifest: Manifest, name: str, path: Path) -> None:
    try:
        raw = path.open("rb")
    except FileNotFoundError:  # expunged since the listing: absent, as it is now
        return
    with raw:
        stat = os.fstat(raw.fileno())
        _add(tar, manifest, name, raw, size=stat.st_size, mtime=stat.st_mtime)


def _add(
    tar: tarfile.TarFile,
    manifest: Manifest | None,
    name: str,
    raw: BinaryIO,
    *,
    size: int,
    mtime: float,
) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    # Whole seconds: a fraction would cost a pax header per file (a third of the CPU time).
    info.mtime = int(mtime)
    info.mode = 0o600
    reader = _Hashing(raw)
    tar.addfile(info, reader)
    if manifest is not None:
        manifest.files.append({"path": name, "size": size, "sha256": reader.digest.hexdigest()})
