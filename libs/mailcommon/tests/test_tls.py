"""The generated certificate: made once, and the library that makes it stays out of the front
ends that find it made (its Rust extension keeps about 9 MiB resident)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

from mailcommon.tls import ensure_certificate, server_context

CHECK = """
import sys
from pathlib import Path
import pop3d.__main__, pop3d.server, smtp_in.__main__
from mailcommon.certwatch import ReloadingContext
from mailcommon.tls import serving_pair
pair = serving_pair(None, None, Path(sys.argv[1]), "mail.example.test", True)
reloading = ReloadingContext(lambda: pair)
assert reloading.not_after > 0 and not reloading.check("test")
assert "cryptography.hazmat.bindings._rust" not in sys.modules, "cryptography's extension loaded"
"""


def test_generated_once_and_not_loaded_where_it_exists(tmp_path: Path) -> None:
    cert, key = ensure_certificate(None, None, tmp_path, "mail.example.test")
    assert isinstance(server_context(cert, key), ssl.SSLContext)
    first = cert.read_bytes()
    assert ensure_certificate(None, None, tmp_path, "mail.example.test") == (cert, key)
    assert cert.read_bytes() == first
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
