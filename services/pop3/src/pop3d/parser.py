"""The one argument parser: every command's arguments go through :class:`Args`.

Rules (strict, like Dovecot's ``pop3-commands.c``): arguments are separated by spaces; a message
number is ASCII digits only, no sign, no leading zero, at least 1 and at most the snapshot's size;
a line count (TOP) is ASCII digits; nothing may follow the last expected argument.
"""

from __future__ import annotations

import re
from typing import Final

_NUMBER: Final = re.compile(rb"[0-9]{1,10}")  # bytes pattern: ASCII digits only, never Unicode
MAX_NUMBER: Final = 2**31 - 1


class ArgError(Exception):
    """The arguments do not fit the command; the message is the text of the ``-ERR`` reply."""


class NoSuchMessage(ArgError):
    """A well-formed message number outside the snapshot (``-ERR no such message``)."""


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


class Args:
    """One command's arguments (the line after the command and one space), taken left to right
    as typed values; :meth:`done` refuses anything left over. ``count`` is the number of
    messages in the snapshot."""

    __slots__ = ("_count", "_rest")

    def __init__(self, arg: bytes, count: int = 0) -> None:
        self._rest = arg
        self._count = count

    def _token(self) -> bytes | None:
        """The next space-separated token; None when nothing is left."""
        if not self._rest:
            return None
        token, sep, rest = self._rest.partition(b" ")
        if sep and not rest:
            raise ArgError("trailing space")
        self._rest = rest
        return token

    def msg(self) -> int:
        token = self._token()
        if token is None:
            raise ArgError("missing message number")
        return parse_msg(token, self._count)

    def opt_msg(self) -> int | None:
        token = self._token()
        return None if token is None else parse_msg(token, self._count)

    def lines(self) -> int:
        """A line count (TOP)."""
        token = self._token()
        if token is None:
            raise ArgError("missing number of lines")
        return parse_number(token)

    def word(self) -> bytes:
        token = self._token()
        if token is None:
            raise ArgError("missing argument")
        if not token:
            raise ArgError("empty argument")
        return token

    def opt_word(self) -> bytes | None:
        token = self._token()
        if token is not None and not token:
            raise ArgError("empty optional argument")
        return token

    def rest(self) -> bytes:
        """The rest of the line as it is (a password may hold spaces)."""
        if not self._rest:
            raise ArgError("missing argument")
        rest, self._rest = self._rest, b""
        return rest

    def done(self) -> None:
        if self._rest:
            raise ArgError("too many arguments")
