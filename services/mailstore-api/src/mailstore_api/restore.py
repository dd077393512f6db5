"""Reading a backup (:mod:`mailstore_api.backup`): verify it, or restore it into an empty volume.

Both read the tar as a stream (a file or stdin) in one pass and check the same things: every
member is a regular file with a name a backup can have (no links, devices, absolute paths or
``..``: a crafted archive cannot write outside the volume), each file's size and sha256 match
the manifest, the manifest matches ``manifest.json.sha256``, every file of the manifest is there
exactly once and nothing else is, the archive ends properly (a truncated one fails), and both
databases pass ``PRAGMA integrity_check`` with a schema version this release knows.

A restore writes into a staging directory inside ``DATA_DIR`` while it reads, and moves the
databases and ``mail/`` into place only once all of that passed and the files are durable; a
backup that fails any check leaves the volume as empty as it was. It holds the volume's lock
(:mod:`mailstore_api.volume`), so it refuses to run beside a mailstore on the same volume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mailcommon.addresses import normalize_domain
from mailcommon.atomicfile import fsync_dir
from mailcommon.names import is_valid_message_id, is_valid_username

from mailstore_api.backup import CHUNK, DATABASES, FORMAT, MANIFEST, MANIFEST_DIGEST
from mailstore_api.committer import VolumeSync
from mailstore_api.maildir import message_id_of
from mailstore_api.migrations import MIGRATIONS
from mailstore_api.volume import hold_data_lock

#: What an empty volume may hold: the mailstore's lock file, a file system's lost+found.
IGNORED = {"mailstore.lock", "lost+found"}
_MAILDIR = re.compile(r"mail/([^/]+)/([^/]+)")
_MESSAGE = re.compile(r"(mail/[^/]+/[^/]+)/(new|cur)/([^/]+)")


class BadBackup(Exception):
    """The backup is damaged or is not one of ours."""


class VolumeNotEmpty(Exception):
    """A restore needs an empty ``DATA_DIR``."""


@dataclass
class Summary:
    """What a verified backup holds."""

    created_at: str
    maildirs: int
    messages: int
    octets: int


#: Opens the destination of one member (its path in the backup, its mtime), or None to discard.
Sink = Callable[[str, float], BinaryIO | None]


@dataclass
class _Seen:
    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    databases: dict[str, bytes] = field(default_factory=dict)
    manifest: bytes | None = None
    digest: bytes | None = None


def _is_maildir(path: str) -> bool:
    match = _MAILDIR.fullmatch(path)
    return (
        match is not None
        and normalize_domain(match.group(1)) == match.group(1)
        and is_valid_username(match.group(2))
    )


def _allowed(name: str) -> bool:
    if name in DATABASES or name in (MANIFEST, MANIFEST_DIGEST):
        return True
    match = _MESSAGE.fullmatch(name)
    return (
        match is not None
        and _is_maildir(match.group(1))
        and is_valid_message_id(message_id_of(match.group(3)))
    )


@dataclass
class Backup:
    """A backup read and checked: its summary, manifest and databases (file bytes)."""

    summary: Summary
    manifest: dict[str, Any]
    databases: dict[str, bytes]


def read_backup(stream: BinaryIO, sink: Sink) -> Backup:
    """Read and check the whole backup from ``stream``, handing each file to ``sink``; raises
    :class:`BadBackup` on the first problem."""
    seen = _Seen()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _read_member(tar, member, seen, sink)
    except (tarfile.TarError, EOFError) as exc:
        raise BadBackup(f"not a whole tar archive: {exc}") from exc
    return _check(seen)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, seen: _Seen, sink: Sink) -> None:
    name = member.name
    if not member.isreg() or not _allowed(name):
        raise BadBackup(f"unexpected member {name!r} (type {member.type!r})")
    if name in seen.files or (name == MANIFEST and seen.manifest is not None):
        raise BadBackup(f"{name} appears twice")
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    keep = name in DATABASES or name in (MANIFEST, MANIFEST_DIGEST)
    target = None if keep else sink(name, member.mtime)
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if keep:
                parts.append(chunk)
            elif target is not None:
                target.write(chunk)
    finally:
        if target is not None:
            target.close()
    if size != member.size:
        raise BadBackup(f"{name}: {size} octets of {member.size}")
    data = b"".join(parts)
    if name == MANIFEST:
        seen.manifest = data
    elif name == MANIFEST_DIGEST:
        seen.digest = data
    else:
        if name in DATABASES:
            seen.databases[name] = data
        seen.files[name] = (size, digest.hexdigest())


def _check(seen: _Seen) -> Backup:
    if seen.manifest is None or seen.digest is None:
        raise BadBackup(f"no {MANIFEST} with its digest: the backup is incomplete")
    if seen.digest.split()[:1] != [hashlib.sha256(seen.manifest).hexdigest().encode()]:
        raise BadBackup(f"{MANIFEST} does not match {MANIFEST_DIGEST}")
    manifest = _manifest(seen.manifest)
    listed = {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]}
    for path, (size, digest) in listed.items():
        if path not in seen.files:
            raise BadBackup(f"{path} is in the manifest but missing from the backup")
        if seen.files[path] != (size, digest):
            raise BadBackup(f"{path}: checksum or size differs from the manifest")
    extra = sorted(set(seen.files) - set(listed))
    if extra:
        raise BadBackup(f"{extra[0]} is not in the manifest")
    for name in DATABASES:
        if name not in seen.databases:
            raise BadBackup(f"{name} is missing")
        _check_database(name, seen.databases[name])
    messages = [size for path, (size, _) in listed.items() if path not in DATABASES]
    summary = Summary(
        manifest["created_at"], len(manifest["maildirs"]), len(messages), sum(messages)
    )
    return Backup(summary, manifest, seen.databases)


def _manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(data)
        if manifest.get("format") != FORMAT:
            raise BadBackup(f"{MANIFEST} is not a maildrop backup's")
        for path in manifest["maildirs"]:
            if not _is_maildir(path):
                raise BadBackup(f"{MANIFEST}: unexpected Maildir {path!r}")
        for entry in manifest["files"]:
            if not (isinstance(entry["size"], int) and isinstance(entry["sha256"], str)):
                raise BadBackup(f"{MANIFEST}: a malformed entry")
        return manifest
    except (ValueError, KeyError, TypeError) as exc:
        raise BadBackup(f"{MANIFEST} is malformed: {exc}") from exc


def _check_database(name: str, data: bytes) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            raise BadBackup(f"{name} fails integrity_check: {'; '.join(result[:3])}")
        schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise BadBackup(f"{name} is not a sound SQLite database: {exc}") from exc
    finally:
        conn.close()
    if name == DATABASES[0] and schema > len(MIGRATIONS):
        raise BadBackup(f"{name} is at schema version {schema}: made by a newer release")


def verify(stream: BinaryIO) -> Summary:
    """Check a backup without writing anything."""
    return read_backup(stream, lambda name, mtime: None).summary


def restore(stream: BinaryIO, data_dir: Path) -> Summary:
    """Restore the backup into ``data_dir``, which must be empty (:data:`IGNORED` aside)."""
    lock = hold_data_lock(data_dir)  # VolumeBusy while a mailstore runs on it
    try:
        present = sorted(set(os.listdir(data_dir)) - IGNORED)
        if present:
            raise VolumeNotEmpty(
                f"{data_dir} is not empty (it holds {', '.join(present[:3])}): "
                "a backup is restored into an empty volume only"
            )
        staging = data_dir / f".restore-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            backup = _restore_into(stream, staging)
            for path in backup.manifest["maildirs"]:
                for sub in ("tmp", "new", "cur"):
                    (staging / path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            _make_durable(staging)
            for name in (*DATABASES, "mail"):
                if (staging / name).exists():
                    (staging / name).rename(data_dir / name)
            fsync_dir(data_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return backup.summary
    finally:
        os.close(lock)


def _restore_into(stream: BinaryIO, staging: Path) -> Backup:
    def sink(name: str, mtime: float) -> BinaryIO:
        path = staging / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _Timed(path.open("xb"), path, mtime)  # type: ignore[return-value]

    backup = read_backup(stream, sink)
    for name, data in backup.databases.items():  # held in memory for their checks
        with (staging / name).open("xb") as f:
            f.write(data)
    return backup


class _Timed:
    """A restored file: closed with its modification time set as the backup has it."""

    def __init__(self, raw: BinaryIO, path: Path, mtime: float) -> None:
        self._raw = raw
        self._path = path
        self._mtime = mtime

    def write(self, data: bytes) -> int:
        return self._raw.write(data)

    def close(self) -> None:
        self._raw.close()
        os.utime(self._path, (self._mtime, self._mtime))


def _make_durable(root: Path) -> None:
    """Everything written under ``root``, on disk: one ``syncfs`` (``os.sync`` without it)."""
    try:
        sync = VolumeSync(root)
    except AttributeError:
        os.sync()
        return
    try:
        sync()
    finally:
        sync.close()
