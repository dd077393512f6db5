"""DKIM and ARC public keys, looked up on the event loop before any signature is verified.

Verifying is CPU work (dkimpy, in Python: about a millisecond per RSA signature) that runs in an
executor, a process pool in smtp-in. The keys it needs are looked up first, concurrently,
through the shared resolver and cache, and handed over with the message: the verifier never
waits on DNS, and needs no resolver of its own in another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dkim.util import parse_tag_value

from mailauth.dns import Resolver, TemporaryError
from mailauth.headers import field_name, header_fields, split_header_block

# A key name (``selector._domainkey.domain``, lower-case, no final dot) and its record: the first
# TXT record's strings joined, ``None`` when there is none, or the temporary failure met.
Keys = dict[bytes, bytes | TemporaryError | None]


def _normal(name: bytes) -> bytes:
    return name.rstrip(b".").lower()


def key_names(message: bytes, fields: frozenset[bytes], limit: int) -> list[bytes]:
    """The key names the first ``limit`` of the header fields named in ``fields`` point at
    (``s=`` and ``d=``), each once; fields whose tags do not parse are left to the verifier."""
    block, _ = split_header_block(message)
    names: list[bytes] = []
    seen = 0
    for field in header_fields(block):
        if field_name(field) not in fields:
            continue
        seen += 1
        if seen > limit:
            break
        name = _key_name(field.partition(b":")[2])
        if name is not None and name not in names:
            names.append(name)
    return names


def _key_name(value: bytes) -> bytes | None:
    """``s._domainkey.d`` of one signature field; ``None`` when its tags do not parse (the
    verifier then reports the broken signature) or lack either."""
    try:
        tags = parse_tag_value(value)
    except Exception:  # dkimpy's parser on hostile input
        return None
    if b"s" not in tags or b"d" not in tags:
        return None
    return _normal(tags[b"s"] + b"._domainkey." + tags[b"d"])


async def fetch_keys(resolver: Resolver, names: Iterable[bytes]) -> Keys:
    """Every key in ``names``, looked up at once. A name that is not ASCII is no key (RFC 6376
    3.5: ``d=`` and ``s=`` hold A-labels), not a lookup that failed."""

    async def one(name: bytes) -> bytes | TemporaryError | None:
        try:
            text = name.decode("ascii")
        except UnicodeError:
            return None
        try:
            records = await resolver.txt(text)
        except TemporaryError as exc:
            return exc
        return records[0] if records else None

    wanted = list(dict.fromkeys(names))
    return dict(zip(wanted, await asyncio.gather(*(one(n) for n in wanted)), strict=True))


class KeyLookup:
    """dkimpy's ``dnsfunc`` over fetched keys (picklable: it travels to a worker process).
    Raises :class:`TemporaryError` for a key whose lookup failed for now; a name that was not
    fetched is no key."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def __call__(self, name: bytes | str, timeout: float = 0) -> bytes | None:
        raw = name if isinstance(name, bytes) else name.encode("utf-8", "replace")
        record = self.keys.get(_normal(raw))
        if isinstance(record, TemporaryError):
            raise record
        return record
