"""mpop, the real POP3 client the tests drive: a Maildir for it to deliver into, its rc file, a run."""

from __future__ import annotations

import subprocess
from pathlib import Path


def maildir(workdir: Path) -> Path:
    """``workdir/Maildir`` with ``tmp/``, ``new/`` and ``cur/`` (made if missing)."""
    path = workdir / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def write_rc(workdir: Path, text: str) -> Path:
    """``workdir/mpoprc`` holding ``text``, mode 0600 (mpop refuses a file others may read)."""
    rc = workdir / "mpoprc"
    rc.write_text(text)
    rc.chmod(0o600)
    return rc


def attempt(rc: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``mpop -C rc options...``, whatever it exits with."""
    return subprocess.run(
        ["mpop", "-C", str(rc), *options], capture_output=True, text=True, timeout=60, check=False
    )


def run(rc: Path, *options: str) -> str:
    """:func:`attempt`, which must succeed; its standard output."""
    result = attempt(rc, *options)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
