"""The one argument parser: message numbers and arguments, strictly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pop3d.parser import ArgError, Args, NoSuchMessage, parse_msg


def only_msg(arg: bytes, count: int) -> int:
    args = Args(arg, count)
    n = args.msg()
    args.done()
    return n


def msg_lines(arg: bytes, count: int) -> tuple[int, int]:
    args = Args(arg, count)
    values = args.msg(), args.lines()
    args.done()
    return values


@pytest.mark.parametrize("token", [b"1", b"5", b"10"])
def test_valid_message_numbers(token: bytes) -> None:
    assert only_msg(token, 10) == int(token)


@pytest.mark.parametrize(
    "arg",
    [
        b"",  # missing
        b"x",
        b"1x",
        b"+1",
        b"-1",
        b"01",
        b" 1",
        b"1 ",
        b"1 2",
        b"1\x00",
        b"0x1",
        b"1.0",
        "\u0661".encode(),  # ARABIC-INDIC DIGIT ONE
        "\uff11".encode(),  # FULLWIDTH DIGIT ONE
        b"99999999999999999999",
        b"\xff",
    ],
)
def test_invalid_message_numbers(arg: bytes) -> None:
    with pytest.raises(ArgError) as info:
        only_msg(arg, 10)
    assert not isinstance(info.value, NoSuchMessage)


@pytest.mark.parametrize("arg", [b"0", b"11", b"2147483647"])
def test_out_of_range_is_no_such_message(arg: bytes) -> None:
    with pytest.raises(NoSuchMessage):
        only_msg(arg, 10)


def test_optional_and_count() -> None:
    assert Args(b"", 3).opt_msg() is None
    assert Args(b"2", 3).opt_msg() == 2
    assert msg_lines(b"2 0", 3) == (2, 0)
    assert msg_lines(b"2 15", 3) == (2, 15)
    for bad in (b"2", b"2 -1", b"2 x", b"2 1 1", b"2  1", b"2 1 "):
        with pytest.raises(ArgError):
            msg_lines(bad, 3)


def test_no_arguments_allowed() -> None:
    Args(b"").done()
    with pytest.raises(ArgError):
        Args(b"x").done()


def test_words_and_rest() -> None:
    assert Args(b"bob").word() == b"bob"
    args = Args(b"bob smith")
    assert args.word() == b"bob"
    with pytest.raises(ArgError):
        args.done()
    assert Args(b"pass with spaces ").rest() == b"pass with spaces "
    with pytest.raises(ArgError):
        Args(b"").rest()
    args = Args(b"PLAIN")
    assert (args.opt_word(), args.opt_word()) == (b"PLAIN", None)


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=0, max_value=20_000))
def test_numbers_round_trip(count: int, n: int) -> None:
    if 1 <= n <= count:
        assert parse_msg(str(n).encode(), count) == n
    else:
        with pytest.raises(NoSuchMessage):
            parse_msg(str(n).encode(), count)


@given(st.binary(max_size=12))
def test_anything_else_is_refused_or_a_plain_number(token: bytes) -> None:
    try:
        value = parse_msg(token, 2**31 - 1)
    except ArgError:
        return
    # Accepted only when it is exactly the ASCII decimal spelling of the number.
    assert token == str(value).encode()
