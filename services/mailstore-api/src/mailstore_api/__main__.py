"""``python -m mailstore_api``: check the configuration, then serve with uvicorn (one process)."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from types import FrameType

import uvicorn
from mailcommon.memory import pin_mmap_threshold
from mailcommon.metrics import watch_certificate
from mailcommon.secrets import InsecureTokenError
from mailcommon.startup import ConfigError, load_settings

from mailstore_api.app import create_app
from mailstore_api.certificates import CertificateManager
from mailstore_api.challenges import ChallengeResponder
from mailstore_api.db import DATABASE_FILE
from mailstore_api.logsetup import setup_logging
from mailstore_api.migrations import SchemaTooNew, check_file
from mailstore_api.settings import MailstoreSettings, Tokens, resolve_tokens
from mailstore_api.volume import VolumeBusy, hold_data_lock


def _configure() -> tuple[MailstoreSettings, Tokens]:
    try:
        settings = load_settings(MailstoreSettings)
    except ConfigError as exc:
        raise SystemExit(f"mailstore-api: invalid configuration: {exc}") from None
    try:
        tokens = resolve_tokens(settings)
        # Kept open (and locked) until the process ends.
        hold_data_lock(settings.data_dir)
        check_file(settings.data_dir / DATABASE_FILE)
    except (InsecureTokenError, VolumeBusy, SchemaTooNew, OSError, sqlite3.Error) as exc:
        raise SystemExit(f"mailstore-api: refusing to start: {exc}") from None
    return settings, tokens


def _start_acme(settings: MailstoreSettings) -> None:
    """The HTTP-01 responder when it has a port, and the ACME client when ACME is on."""
    if settings.acme_enabled and not settings.acme_http_port:
        raise SystemExit("mailstore-api: ACME_EMAIL is set: set ACME_HTTP_PORT too")
    if not settings.acme_http_port:
        return
    try:
        responder = ChallengeResponder(settings.api_bind_host, settings.acme_http_port)
    except OSError as exc:
        raise SystemExit(f"mailstore-api: cannot listen on ACME_HTTP_PORT: {exc}") from None
    responder.start()
    if settings.acme_enabled:
        manager = CertificateManager(settings, responder)
        watch_certificate(lambda: manager.not_after)
        manager.start()


def _exit_after_drain(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    # Everything on the volume is the mailstore's alone: the users database (password hashes),
    # Maildirs and messages are created 0600 / 0700, whatever the umask of the caller.
    os.umask(0o077)
    # argon2id's 19 MiB blocks get their own mappings and go back to the system after each login.
    pin_mmap_threshold()  # before the first large allocation
    try:
        settings, tokens = _configure()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level, settings.log_format)
    try:
        _start_acme(settings)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    # Worker threads doing file I/O get the GIL back sooner after each system call.
    sys.setswitchinterval(0.001)
    app = create_app(settings, tokens, volume_locked=True)
    # uvicorn drains on SIGTERM, puts back the handlers it found and raises the signal again: with
    # this one in place that ends in a normal exit (status 0, atexit flushes the log buffer)
    # instead of death by the signal, which would lose the last buffered log lines.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_after_drain)
    # The mailstore is the single writer of its volume: one process, never several workers.
    uvicorn.run(
        app,
        host=settings.api_bind_host,
        port=settings.api_bind_port,
        workers=1,
        # What the package depends on (uvicorn's "auto" would fall back to asyncio and h11).
        loop="uvloop",
        http="httptools",
        ws="none",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace,
    )


if __name__ == "__main__":
    main()
