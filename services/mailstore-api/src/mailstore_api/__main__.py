"""``python -m mailstore_api``: check the configuration, then serve with uvicorn (one process)."""

from __future__ import annotations

import sys

import uvicorn
from mailcommon.secrets import InsecureTokenError
from pydantic import ValidationError

from mailstore_api.app import create_app
from mailstore_api.fastpath import MailstoreASGI
from mailstore_api.logsetup import setup_logging
from mailstore_api.settings import MailstoreSettings, Tokens, resolve_tokens
from mailstore_api.volume import VolumeBusy, hold_data_lock


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
