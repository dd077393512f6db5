"""``free_port`` hands out ports no outgoing connection can take before a service binds them."""

from __future__ import annotations

import socket

import pytest
from mailstack import ports
from mailstack.ports import LOWEST_PORT, ephemeral_range, free_port


def test_ports_lie_below_the_ephemeral_range_and_are_never_repeated() -> None:
    low, _ = ephemeral_range()
    handed = [free_port() for _ in range(300)]
    assert all(LOWEST_PORT <= port < low for port in handed)
    assert len(set(handed)) == len(handed)


def test_a_handed_out_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname()[1] == port


def test_many_outgoing_connections_never_take_a_handed_out_port() -> None:
    """The failure this guards against: a client's source port equal to a port picked earlier."""
    picked = {free_port() for _ in range(50)}
    with socket.create_server(("127.0.0.1", 0), backlog=600) as server:
        target = server.getsockname()
        clients = [socket.create_connection(target) for _ in range(500)]
        try:
            sources = {client.getsockname()[1] for client in clients}
        finally:
            for client in clients:
                client.close()
    assert not sources & picked
    for port in picked:
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    low, _ = ephemeral_range()
    monkeypatch.setattr(ports, "LOWEST_PORT", low - 1000)  # a range small enough to fill
    occupied: list[socket.socket] = []
    try:
        for port in range(low - 1000, low - 100):
            try:
                occupied.append(socket.create_server(("127.0.0.1", port)))
            except OSError:
                continue  # taken already, which is as good
        in_use = {sock.getsockname()[1] for sock in occupied}
        handed = {free_port() for _ in range(50)}
        assert all(low - 1000 <= port < low for port in handed)
        assert not handed & in_use
    finally:
        for sock in occupied:
            sock.close()
