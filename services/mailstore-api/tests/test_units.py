"""In-process tests of the pure parts: line-end conversion, names, the login cache, APOP sealing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mailcommon.names import is_valid_message_id
from mailstore_api.apop import ApopSecrets
from mailstore_api.maildir import LineEndings, base_name, final_name, host_label, message_id_of


def convert(chunks: list[bytes]) -> bytes:
    lines = LineEndings()
    out = b"".join(lines.convert(c) for c in chunks) + lines.finish()
    assert lines.stored == len(out)
    assert lines.lfs == out.count(b"\n")
    return out


def reference(data: bytes) -> bytes:
    out = data.replace(b"\r\n", b"\n")
    return out if out.endswith(b"\n") else out + b"\n"


@given(
    st.lists(st.sampled_from([b"a", b"\r", b"\n", b".", b"\r\n"]), max_size=80),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_line_ends_do_not_depend_on_chunking(pieces, cuts):
    data = b"".join(pieces)
    bounds = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    assert convert(chunks) == reference(data)


def test_line_end_examples():
    assert convert([b"a\r", b"\nb"]) == b"a\nb\n"
    assert convert([b"a\r", b"", b"\n"]) == b"a\n"
    assert convert([b"a\r"]) == b"a\r\n"
    assert convert([b"a\r", b"b"]) == b"a\rb\n"
    assert convert([]) == b"\n"


def test_names_are_valid_ids_and_at_most_70_chars():
    host = host_label("a-very-long-host-name-indeed.example.org")
    assert len(host) <= 16
    assert host_label("mx.example.org") == "mx"
    assert host_label("we:ird/host") == "we-ird-host"
    for stored in (0, 10**6, 10**12, 10**15):
        name = final_name(base_name(host), stored, stored * 2)
        assert len(name) <= 70
        assert is_valid_message_id(name)
        assert name.endswith(f",S={stored},W={stored * 2}")
    assert message_id_of("1.2.h,S=1,W=2:2,S") == "1.2.h,S=1,W=2"
    assert len({base_name("h") for _ in range(1000)}) == 1000


def test_apop_sealing():
    box = ApopSecrets("t" * 40)
    sealed = box.seal("bob", "tanstaaf")
    assert b"tanstaaf" not in sealed
    assert box.unseal("bob", sealed) == "tanstaaf"
    assert box.unseal("eve", sealed) is None  # bound to the user name
    assert ApopSecrets("u" * 40).unseal("bob", sealed) is None
    assert box.check(
        "bob", sealed, "<1896.697170952@dbc.mtview.ca.us>", "c4c9334bac560ecc979e58001b3e22fb"
    )


@pytest.mark.parametrize("bad", ["", "x" * 3, "\x00"])
def test_apop_check_rejects_garbage(bad):
    box = ApopSecrets("t" * 40)
    assert not box.check("bob", box.seal("bob", "s"), "<t>", bad)
