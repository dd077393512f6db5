"""PROXY protocol headers (HAProxy's proxy-protocol.txt) as a balancer sends them, for tests."""

from __future__ import annotations

import ipaddress
import struct

from aiosmtpd.proxy_protocol import V2_SIGNATURE
from mailcommon.proxy import LOCAL_HEADER

#: v2, command LOCAL: the balancer's own connection (a health check), no client behind it.
LOCAL = LOCAL_HEADER


def v1(client: str, client_port: int, server: str = "127.0.0.1", server_port: int = 25) -> bytes:
    """``PROXY TCP4|TCP6 <client> <server> <ports>\\r\\n``."""
    family = "TCP6" if ipaddress.ip_address(client).version == 6 else "TCP4"
    return f"PROXY {family} {client} {server} {client_port} {server_port}\r\n".encode()


def v2(client: str, client_port: int, server: str = "127.0.0.1", server_port: int = 25) -> bytes:
    """The binary header, command PROXY, over TCP (IPv4 or IPv6 as ``client`` is)."""
    src, dst = ipaddress.ip_address(client), ipaddress.ip_address(server)
    if src.version != dst.version:
        dst = ipaddress.ip_address("::1" if src.version == 6 else "127.0.0.1")
    family = 0x21 if src.version == 6 else 0x11  # AF_INET6 / AF_INET, STREAM
    addresses = src.packed + dst.packed + struct.pack("!HH", client_port, server_port)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(addresses)) + addresses
