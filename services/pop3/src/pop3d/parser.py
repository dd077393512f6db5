"""The one argument parser: every command's arguments go through :func:`parse_args`.

Rules (strict, like Dovecot's ``pop3-commands.c``): arguments are separated by spaces; a message
number is ASCII digits only, no sign, no leading zero, at least 1 and at most the snapshot's size;
a line count (TOP) is ASCII digits; nothing may follow the last expected argument.
"""

from __future__ import annotations

import enum
import re
from typing import Final

_NUMBER: Final = re.compile(rb"[0-9]{1,10}")  # bytes pattern: ASCII digits only, never Unicode
MAX_NUMBER: Final = 2**31 - 1


class ArgError(Exception):
    """The arguments do not fit the command; the message is the text of the ``-ERR`` reply."""


class NoSuchMessage(ArgError):
    """A well-formed message number outside the snapshot (``-ERR no such message``)."""


class Arg(enum.Enum):
    MSG = "message number"
    OPT_MSG = "optional message number"
    COUNT = "number of lines"
    WORD = "argument"
    OPT_WORD = "optional argument"
    REST = "rest of the line"


def parse_number(token: bytes) -> int:
    """A non-negative decimal number in ASCII digits, else :class:`ArgError`."""
    if not _NUMBER.fullmatch(token):
        raise ArgError("invalid number")
    value = int(token)
    if value > MAX_NUMBER:
        raise ArgError("invalid number")
    return value


def parse_msg(token: bytes, count: int) -> int:
    """A message number 1..count (no leading zero), else :class:`ArgError` / :class:`NoSuchMessage`."""
    if token.startswith(b"0") and token != b"0":
        raise ArgError("invalid message number")
    try:
        value = parse_number(token)
    except ArgError:
        raise ArgError("invalid message number") from None
    if value < 1 or value > count:
        raise NoSuchMessage(f"no such message, only {count} in maildrop")
    return value


def parse_args(arg: bytes, spec: tuple[Arg, ...], count: int = 0) -> list[int | bytes | None]:
    """Parse ``arg`` (the line after the command and one space) by ``spec``.

    Returns one value per spec entry: ``int`` for MSG/OPT_MSG/COUNT (None for an absent optional),
    ``bytes`` for WORD/OPT_WORD/REST. ``count`` is the number of messages in the snapshot.
    """
    values: list[int | bytes | None] = []
    rest = arg
    for kind in spec:
        if kind is Arg.REST:
            if not rest:
                raise ArgError("missing argument")
            values.append(rest)
            rest = b""
            continue
        if not rest:
            if kind in (Arg.OPT_MSG, Arg.OPT_WORD):
                values.append(None)
                continue
            raise ArgError(f"missing {kind.value}")
        token, sep, rest = rest.partition(b" ")
        if sep and not rest:
            raise ArgError("trailing space")
        if kind in (Arg.MSG, Arg.OPT_MSG):
            values.append(parse_msg(token, count))
        elif kind is Arg.COUNT:
            values.append(parse_number(token))
        else:
            if not token:
                raise ArgError(f"empty {kind.value}")
            values.append(token)
    if rest:
        raise ArgError("too many arguments")
    return values
