"""Tokens: validated when configured, generated once onto the secrets volume when not.

Generation is race-free across processes and containers (:func:`mailcommon.atomicfile.create_exclusive`:
a private temporary file hard-linked into place, which fails if another process got there first); the
loser reads the winner's token.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from mailcommon.atomicfile import create_exclusive

MIN_TOKEN_LENGTH = 32
# Values that appear in .env.example and the docs; a token equal to one of them is refused.
EXAMPLE_TOKENS = frozenset(
    {
        "change-me",
        "changeme",
        "replace-me-with-a-long-random-string-of-32-chars-or-more",
    }
)


class InsecureTokenError(ValueError):
    """A configured token is empty, too short or an example value."""


def validate_token(name: str, value: str) -> str:
    """Return ``value`` if it is usable as a secret, else raise with a message saying why."""
    if not value:
        raise InsecureTokenError(
            f"{name} is empty; set it in .env or leave it unset to generate one"
        )
    if value in EXAMPLE_TOKENS:
        raise InsecureTokenError(f"{name} is the example value from .env.example; choose your own")
    if len(value) < MIN_TOKEN_LENGTH:
        raise InsecureTokenError(
            f"{name} is {len(value)} characters; it must be at least {MIN_TOKEN_LENGTH}"
        )
    return value


def load_or_create_file(path: Path, make: bytes) -> bytes:
    """Return the contents of ``path``, creating it with ``make`` first if it does not exist."""
    if not path.exists():
        create_exclusive(path, make)
    return path.read_bytes()


def resolve_token(name: str, configured: str, secrets_dir: Path) -> str:
    """The token named ``name``: the configured value if set, else one generated in ``secrets_dir``.

    The file name is the lower-cased variable name, e.g. ``/secrets/admin_token``.
    """
    if configured:
        return validate_token(name, configured)
    path = secrets_dir / name.lower()
    generated = secrets.token_urlsafe(32).encode()
    return validate_token(
        f"{name} (from {path})", load_or_create_file(path, generated).decode().strip()
    )
