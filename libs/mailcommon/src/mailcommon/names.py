"""The rules for user names and message ids, shared by the mailstore and the front ends."""

from __future__ import annotations

import re

USERNAME_RULE = (
    "1-64 characters of lowercase letters, digits, '.', '_' and '-', "
    "starting with a letter or a digit"
)
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A message id is the Maildir base name: printable, no '/', no ':', 1-70 characters (RFC 1939 UIDL).
MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,=-]{0,69}")


def is_valid_username(name: str) -> bool:
    """True when ``name`` follows :data:`USERNAME_RULE` exactly."""
    return USERNAME_RE.fullmatch(name) is not None


def is_valid_message_id(message_id: str) -> bool:
    """True when ``message_id`` can be a Maildir base name of ours (and a UIDL)."""
    return MESSAGE_ID_RE.fullmatch(message_id) is not None
