"""The reloading server context: a good new pair serves new handshakes, sessions already open keep
theirs, a bad pair is refused and the old one keeps serving. Real TLS over loopback sockets."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mailcommon.certwatch import CertificateRefused, ReloadingContext, load_pair
from mailstack.certs import ScratchCA

HOSTNAME = "mail.example.test"


@pytest.fixture
def ca() -> ScratchCA:
    return ScratchCA.create()


def client_for(ca: ScratchCA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.pem.decode())


@asynccontextmanager
async def echo_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """An implicit-TLS echo server on loopback with ``context``; yields its port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


Session = tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]


async def session(port: int, client: ssl.SSLContext) -> Session:
    """A verified session: the server's certificate (DER) and the streams. Without
    ``check_hostname`` the client sends no SNI (as many MTAs do)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname=HOSTNAME if client.check_hostname else None
    )
    writer.write(b"ping\n")
    assert await reader.readline() == b"ping\n"
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return der, reader, writer


@pytest.mark.parametrize("sni", [True, False])
def test_a_new_pair_serves_new_sessions_and_open_ones_keep_working(
    tmp_path: Path, ca: ScratchCA, sni: bool
) -> None:
    cert, key = ca.write(tmp_path, HOSTNAME)
    reloading = ReloadingContext(lambda: (cert, key), interval=60)
    client = client_for(ca)
    client.check_hostname = sni

    async def scenario() -> None:
        async with echo_server(reloading.context) as port:
            before, old_reader, old_writer = await session(port, client)
            first_digest = reloading.digest
            ca.write(tmp_path, HOSTNAME)  # certificate and key replaced
            assert reloading.check("test")
            assert reloading.digest != first_digest
            after, _, new_writer = await session(port, client)
            assert after != before
            assert after == ssl.PEM_cert_to_DER_cert(cert.read_text())
            # The session opened before the swap still talks, over the pair it was given.
            old_writer.write(b"still there\n")
            assert await old_reader.readline() == b"still there\n"
            assert old_writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == before
            for writer in (old_writer, new_writer):
                writer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "damage", ["key_mismatch", "expired", "not_yet_valid", "half_written", "missing"]
)
def test_a_bad_pair_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path, ca: ScratchCA, damage: str
) -> None:
    cert, key = ca.write(tmp_path, HOSTNAME)
    reloading = ReloadingContext(lambda: (cert, key), interval=60)
    serving = reloading.digest
    if damage == "key_mismatch":
        cert.write_bytes(ca.issue(HOSTNAME)[0])
    elif damage == "expired":
        ca.write(
            tmp_path,
            HOSTNAME,
            valid_from=datetime.timedelta(days=-10),
            valid_for=datetime.timedelta(days=1),
        )
    elif damage == "not_yet_valid":
        ca.write(tmp_path, HOSTNAME, valid_from=datetime.timedelta(days=1))
    elif damage == "half_written":
        cert.write_bytes(cert.read_bytes()[:300])
    else:
        cert.unlink()
    assert not reloading.check("test")
    assert reloading.digest == serving
    with pytest.raises(CertificateRefused):
        load_pair(cert, key)
    # The next good pair is taken.
    ca.write(tmp_path, HOSTNAME)
    assert reloading.check("test")
    assert reloading.digest != serving


def test_expiry_is_the_certificates(tmp_path: Path, ca: ScratchCA) -> None:
    cert, key = ca.write(tmp_path, HOSTNAME, valid_for=datetime.timedelta(days=3))
    pair = load_pair(cert, key)
    expected = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3, hours=-1)
    assert abs(pair.not_after - expected.timestamp()) < 120


def test_one_file_with_key_and_chain(tmp_path: Path, ca: ScratchCA) -> None:
    cert_pem, key_pem = ca.issue(HOSTNAME)
    combined = tmp_path / "acme.pem"
    combined.write_bytes(cert_pem + key_pem)
    assert isinstance(load_pair(combined, None).context, ssl.SSLContext)


def test_a_refused_pair_at_start_falls_back_until_it_is_good(tmp_path: Path, ca: ScratchCA) -> None:
    """The ACME certificate expired (renewals failed): the generated pair serves meanwhile."""
    acme_cert, acme_key = ca.write(
        tmp_path / "acme",
        HOSTNAME,
        valid_from=datetime.timedelta(days=-100),
        valid_for=datetime.timedelta(days=90),
    )
    generated = ca.write(tmp_path / "generated", HOSTNAME)
    with pytest.raises(CertificateRefused, match="expired"):
        ReloadingContext(lambda: (acme_cert, acme_key))
    reloading = ReloadingContext(lambda: (acme_cert, acme_key), fallback=lambda: generated)
    assert reloading.digest == load_pair(*generated).digest
    assert not reloading.check("test")  # the same refused pair: no second line, no change
    ca.write(tmp_path / "acme", HOSTNAME)
    assert reloading.check("test")
    assert reloading.digest == load_pair(acme_cert, acme_key).digest
