"""mailcommon.proxy: whose header is believed, what address it gives, and reading it from a raw
socket without taking a byte of what follows (real socket pairs, aiosmtpd's parser)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from mailcommon.proxy import ProxyPolicy, SocketReader, normalize_ip, parse_networks
from mailstack import proxyheaders

POLICY = ProxyPolicy(parse_networks("10.9.0.0/16, fd00::/8"), timeout=1.0)


def parsed(data: bytes, peer: tuple[str, int]) -> tuple[str, int] | None:
    """What the policy makes of ``data`` arriving from ``peer`` over a real socket."""

    async def run() -> tuple[str, int] | None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            theirs.sendall(data)
            theirs.shutdown(socket.SHUT_WR)
            return POLICY.client(await POLICY.read(SocketReader(ours)), peer)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "peer", "client"),
    [
        (proxyheaders.v1("203.0.113.7", 1234), ("10.9.1.1", 5), ("203.0.113.7", 1234)),
        (proxyheaders.v2("203.0.113.7", 1234), ("10.9.1.1", 5), ("203.0.113.7", 1234)),
        (proxyheaders.v2("2001:db8::1", 25), ("fd00::3", 5), ("2001:db8::1", 25)),
        (proxyheaders.v2("203.0.113.7", 1), ("::ffff:10.9.0.2", 5), ("203.0.113.7", 1)),
        (proxyheaders.v2("203.0.113.7", 1), ("192.0.2.1", 5), None),  # untrusted balancer
        (proxyheaders.LOCAL, ("10.9.1.1", 5), ("10.9.1.1", 5)),  # the balancer's probe
        (proxyheaders.LOCAL, ("127.0.0.1", 5), ("127.0.0.1", 5)),  # the container's own
        (proxyheaders.LOCAL, ("192.0.2.1", 5), None),
        (b"PROXY UNKNOWN\r\n", ("10.9.1.1", 5), ("10.9.1.1", 5)),
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 1\r\n", ("10.9.1.1", 5), None),
        (b"QUIT\r\n", ("10.9.1.1", 5), None),
        (b"", ("10.9.1.1", 5), None),
    ],
)
def test_the_client_a_connection_is_served_as(
    header: bytes, peer: tuple[str, int], client: tuple[str, int] | None
) -> None:
    assert parsed(header, peer) == client


def test_only_trusted_and_loopback_peers_are_read_from() -> None:
    assert POLICY.may_connect("10.9.255.1") and POLICY.may_connect("127.0.0.5")
    assert POLICY.may_connect("::1") and POLICY.may_connect("::ffff:10.9.0.1")
    assert not POLICY.may_connect("10.10.0.1") and not POLICY.may_connect("garbage")
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1" == normalize_ip("192.0.2.1")


def test_nothing_after_the_header_is_taken_from_the_socket() -> None:
    """What follows (a TLS ClientHello, say) must stay for whoever takes the socket over."""

    async def run(header: bytes) -> bytes:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            theirs.sendall(header + b"\x16\x03\x01 the rest")
            assert await POLICY.read(SocketReader(ours))
            return ours.recv(100)

    for header in (proxyheaders.v1("203.0.113.7", 1), proxyheaders.v2("203.0.113.7", 1)):
        assert asyncio.run(run(header)) == b"\x16\x03\x01 the rest"


def test_a_header_arriving_a_byte_at_a_time_is_read() -> None:
    async def run() -> tuple[str, int] | None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            reading = loop.create_task(POLICY.read(SocketReader(ours)))
            for octet in proxyheaders.v1("203.0.113.9", 9):
                theirs.send(bytes([octet]))
                await asyncio.sleep(0.001)
            return POLICY.client(await reading, ("10.9.0.1", 1))

    assert asyncio.run(run()) == ("203.0.113.9", 9)


def test_a_silent_peer_times_out() -> None:
    async def run() -> object:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            return await ProxyPolicy((), timeout=0.2).read(SocketReader(ours))

    assert asyncio.run(run()) is None


def test_networks_are_checked() -> None:
    assert [str(n) for n in parse_networks("10.0.0.0/8,,192.0.2.7 fd00::/8")] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "fd00::/8",
    ]
    with pytest.raises(ValueError, match=r"10\.0\.0\.1/8"):
        parse_networks("10.0.0.1/8")
