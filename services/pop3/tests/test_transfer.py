"""RETR/TOP encoding: LF→CRLF, byte-stuffing, final CRLF, sizes (W), chunk independence."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pop3d.transfer import DotStuffer, TopLimiter, encode_message, encoded_size, stream_message


def unstuff(body: bytes) -> bytes:
    """What a client holds: the response body without the terminator and byte-stuffing."""
    assert body.endswith(b"\r\n.\r\n") or body == b".\r\n"
    lines = body[:-3].split(b"\r\n")[:-1] if body != b".\r\n" else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def test_examples() -> None:
    assert encode_message(b"a\n.b\n..c\n.\n") == b"a\r\n..b\r\n...c\r\n..\r\n.\r\n"
    assert encode_message(b".first\nx\n") == b"..first\r\nx\r\n.\r\n"
    assert encode_message(b"no final lf") == b"no final lf\r\n.\r\n"
    assert encode_message(b"") == b".\r\n"


def test_size_matches_w() -> None:
    stored = b"Subject: x\n\n.hello\nworld\n"
    assert encoded_size(stored) == len(stored) + stored.count(b"\n")
    assert len(unstuff(encode_message(stored))) == encoded_size(stored)


def test_top() -> None:
    msg = b"A: 1\nB: 2\n\nl1\nl2\n.l3\n"
    assert encode_message(msg, 0) == b"A: 1\r\nB: 2\r\n\r\n.\r\n"
    assert encode_message(msg, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n.\r\n"
    assert encode_message(msg, 99) == encode_message(msg)
    assert encode_message(b"\nbody\n", 0) == b"\r\n.\r\n"
    assert encode_message(b"H: x\n", 5) == b"H: x\r\n.\r\n"


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


lines = st.lists(
    st.sampled_from([b"", b".", b"..", b"a", b".a", b"\r", b"x.y", b"From x", b" ."]),
    max_size=12,
)


@given(lines, st.booleans(), st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_stuffing_is_chunk_independent_and_reversible(
    parts: list[bytes], final_lf: bool, cuts: list[int]
) -> None:
    stored = b"\n".join(parts) + (b"\n" if final_lf else b"")
    whole = encode_message(stored)
    stuffer = DotStuffer()
    pieces = b"".join(stuffer.feed(c) for c in chunked(stored, cuts)) + stuffer.finish()
    assert pieces == whole
    # No line of the body is a lone "." before the terminator.
    assert (b"\r\n.\r\n" not in whole[:-3] and not whole.startswith(b".\r\n")) or stored == b""
    client = unstuff(whole)
    expected = stored.replace(b"\n", b"\r\n")
    if stored and not stored.endswith(b"\n"):
        expected += b"\r\n"
    assert client == expected
    if stored.endswith(b"\n") or not stored:
        assert len(client) == encoded_size(stored)


@given(
    lines,
    lines,
    st.integers(min_value=0, max_value=15),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_top_is_chunk_independent(
    header: list[bytes], body: list[bytes], n: int, cuts: list[int]
) -> None:
    head = [h for h in header if h and h != b"\r"] or [b"H: v"]
    stored = b"\n".join(head) + b"\n\n" + b"".join(b + b"\n" for b in body)
    limiter = TopLimiter(n)
    out = b""
    for c in chunked(stored, cuts):
        out += limiter.feed(c)
        if limiter.done:
            break
    expected = b"\n".join(head) + b"\n\n" + b"".join(b + b"\n" for b in body[:n])
    assert out == expected


class SinkWriter:
    """A StreamWriter stand-in that records writes and counts drains (transport not needed)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.drains = 0

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        self.drains += 1


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=50), max_size=10))
def test_stream_message_equals_encode(chunks: list[bytes]) -> None:
    async def source():  # type: ignore[no-untyped-def]
        for c in chunks:
            yield c

    sink = SinkWriter()
    sent = asyncio.run(stream_message(source(), sink))  # type: ignore[arg-type]
    assert bytes(sink.data) == encode_message(b"".join(chunks))
    assert sent == len(sink.data)
    assert sink.drains >= 1


@pytest.mark.parametrize("size", [1, 4096, 65536 * 3 + 7])
def test_stream_drains_every_chunk(size: int) -> None:
    chunk = (b"line of text\n" * (size // 13 + 1))[:size]

    async def source():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield chunk

    sink = SinkWriter()
    asyncio.run(stream_message(source(), sink))  # type: ignore[arg-type]
    assert sink.drains == 6  # one per chunk and one after the terminator
