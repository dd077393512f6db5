"""Test helper for ``serve_broken_committer.py``: the mailstore's
start-up as ``python -m mailstore_api`` does it, up to the application, from the environment."""

from __future__ import annotations

from mailcommon.startup import load_settings
from mailstore_api.app import create_app
from mailstore_api.logsetup import setup_logging
from mailstore_api.settings import MailstoreSettings, Tokens, resolve_tokens
from mailstore_api.volume import hold_data_lock
from starlette.types import ASGIApp


def configured_app() -> tuple[MailstoreSettings, Tokens, ASGIApp]:
    """Settings, tokens and the application, with the volume locked and logging set up."""
    settings = load_settings(MailstoreSettings)
    tokens = resolve_tokens(settings)
    hold_data_lock(settings.data_dir)
    setup_logging(settings.log_level, settings.log_format)
    return settings, tokens, create_app(settings, tokens, volume_locked=True)
