"""Start-up checks the services share: settings from the environment, secrets and TLS, or one
line on stderr saying what is wrong and exit status 2, before anything listens."""

from __future__ import annotations

import functools
import sys
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from mailcommon.certwatch import CertificateRefused, ReloadingContext
from mailcommon.secrets import InsecureTokenError
from mailcommon.settings import CommonSettings, FrontEndSettings
from mailcommon.tls import serving_pair

EXIT_CONFIG = 2
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ConfigError(Exception):
    """The environment does not describe a service we can run."""


def describe(exc: ValidationError) -> str:
    """pydantic's errors as ``VARIABLE: what is wrong`` pairs, on one line."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]).upper() or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """``cls()`` read from the environment, or ConfigError naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def service_token(settings: CommonSettings) -> str:
    """The service token (configured, or generated once onto the secrets volume), or ConfigError."""
    try:
        return settings.resolved_service_token()
    except InsecureTokenError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read or create the service token: {exc}") from None


def front_end_secrets(settings: FrontEndSettings) -> tuple[str, ReloadingContext]:
    """The service token and the server TLS context of smtp-in or pop3, or ConfigError.

    The context (``.context``) picks up a changed certificate once its ``watch()`` runs.
    """
    token = service_token(settings)
    source = functools.partial(
        serving_pair,
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.secrets_dir,
        settings.mail_hostname,
        settings.acme_enabled,
    )
    fallback = None
    if settings.acme_enabled:
        fallback = functools.partial(
            serving_pair, None, None, settings.secrets_dir, settings.mail_hostname, False
        )
    try:
        return token, ReloadingContext(source, settings.tls_reload_interval, fallback)
    except (CertificateRefused, OSError, ValueError, TimeoutError) as exc:
        raise ConfigError(f"TLS certificate: {exc}") from None


def refuse(service: str, error: ConfigError) -> NoReturn:
    """Say why ``service`` will not start, on one line, and exit with :data:`EXIT_CONFIG`."""
    print(f"{service}: refusing to start: {error}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)
