"""The POP3 session states (RFC 1939 section 3) and the way out of any of them."""

from __future__ import annotations

import enum


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


class AbortSession(Exception):
    """End the connection now, without UPDATE (e.g. the mailstore failed mid-RETR)."""
