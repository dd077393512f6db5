"""The tar header of one backup member: a regular file, mode 0600, owner 0, whole-second mtime.

The format is :mod:`tarfile`'s (``TarInfo.tobuf``, pax format). For the common member, an ASCII
name of at most 100 octets and a size and mtime that fit their octal fields (under 8 GiB, before
the year 4147), that is a single ustar block, which :func:`header` fills in from a template made
by ``tobuf`` itself: the name, size and mtime fields and the checksum, with :mod:`struct`. Any
other member (a longer or non-ASCII name: a pax extended header first) goes to ``tobuf``. The
test suite checks that both give the same octets for many names, sizes and mtimes.

Why: ``tobuf`` builds a dict and encodes every field one by one; with messages of a few KiB it
took about a third of the backup's time (cProfile). Timed on this machine, one header of a
77-octet name: ``tobuf`` 29 µs, the template 2 µs.
"""

from __future__ import annotations

import struct
import tarfile

_NAME = 100  # octets of ustar's name field
_LIMIT = 8**11  # size and mtime: 11 octal digits and a NUL


def pax_header(name: str, size: int, mtime: int) -> bytes:
    """The header as :mod:`tarfile` writes it, for any member."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o600
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_TEMPLATE = pax_header("", 0, 0)
# name, mode+uid+gid (kept), size+mtime, checksum (six digits and a NUL; its eighth octet, a
# space, stays), the rest (kept)
_BLOCK = struct.Struct("100s24s24s7s357s")
_OWNER = _TEMPLATE[100:124]
_REST = _TEMPLATE[155:]
# The checksum is the sum of the block's octets with its own field as spaces: this is the part
# that is the same in every block (the empty name adds nothing).
_FIXED_SUM = sum(_OWNER) + 8 * ord(" ") + sum(_TEMPLATE[156:])


def header(name: str, size: int, mtime: int) -> bytes:
    """The member's header block(s), octet for octet what :func:`pax_header` gives."""
    if not (name.isascii() and len(name) <= _NAME and 0 <= size < _LIMIT and 0 <= mtime < _LIMIT):
        return pax_header(name, size, mtime)
    encoded = name.encode("ascii")
    numbers = b"%011o\0%011o\0" % (size, mtime)
    checksum = b"%06o\0" % (_FIXED_SUM + sum(encoded) + sum(numbers))
    return _BLOCK.pack(encoded, _OWNER, numbers, checksum, _REST)
