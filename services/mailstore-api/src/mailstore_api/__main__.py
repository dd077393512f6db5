"""``python -m mailstore_api``: check the configuration, then serve with uvicorn (one process)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import uvicorn
from mailcommon.secrets import InsecureTokenError
from pydantic import ValidationError

from mailstore_api.app import create_app
from mailstore_api.fastpath import MailstoreASGI
from mailstore_api.logsetup import setup_logging
from mailstore_api.settings import MailstoreSettings, Tokens, resolve_tokens
from mailstore_api.volume import VolumeBusy, hold_data_lock

#: glibc's mallopt parameter, and the threshold: blocks from 128 KiB up get their own mapping.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold (what ``MALLOC_MMAP_THRESHOLD_=131072`` does), so argon2id's
    19 MiB buffers are mapped and unmapped on their own instead of coming from, and staying in,
    the worker threads' heaps: with the dynamic threshold the process kept tens of MiB after
    a burst of logins. True when mallopt accepted it; elsewhere than glibc a no-op."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def _configure() -> tuple[MailstoreSettings, Tokens]:
    try:
        settings = MailstoreSettings()
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"mailstore-api: invalid configuration: {errors}") from None
    try:
        tokens = resolve_tokens(settings)
        # Kept open (and locked) until the process ends.
        hold_data_lock(settings.data_dir)
    except (InsecureTokenError, VolumeBusy, OSError) as exc:
        raise SystemExit(f"mailstore-api: refusing to start: {exc}") from None
    return settings, tokens


def main() -> None:
    pin_mmap_threshold()  # before the first large allocation
    try:
        settings, tokens = _configure()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level, settings.log_format)
    # Worker threads doing file I/O get the GIL back sooner after each system call.
    sys.setswitchinterval(0.001)
    app = MailstoreASGI(create_app(settings, tokens, volume_locked=True), tokens.service)
    # The mailstore is the single writer of its volume: one process, never several workers.
    uvicorn.run(
        app,
        host=settings.api_bind_host,
        port=settings.api_bind_port,
        workers=1,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace,
    )


if __name__ == "__main__":
    main()
