"""Stopping a child process the way each launcher here does: SIGTERM, then SIGKILL after a grace."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(popen: subprocess.Popen[Any], grace: float = 15.0) -> int:
    """SIGTERM ``popen`` unless it has exited, SIGKILL it after ``grace`` seconds; its exit code."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return popen.returncode
