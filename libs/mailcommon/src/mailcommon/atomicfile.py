"""Private files written whole: the data goes to a temporary file beside the target (mode 0600),
is fsynced, and is put in place by one ``link`` or ``rename``, after which the directory is fsynced.
A reader sees no file or the whole file, never a part; once a call returns, the file is durable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` unless it exists (then it is left as it is): race-free across
    processes, since the hard link fails for every writer but the first."""
    tmp = _private_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def replace_file(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` in one ``rename``: readers see the old file or the new one."""
    tmp = _private_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _private_temp(path: Path, data: bytes) -> Path:
    """A new file beside ``path`` (mode 0600) holding ``data``, fsynced; removed again on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        tmp.unlink()
        raise
    finally:
        os.close(fd)
    return tmp


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only a part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a new name, a rename) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
