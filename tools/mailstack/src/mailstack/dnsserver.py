"""A real authoritative DNS server on loopback for tests and benchmarks: Knot DNS (``knotd``).

Zones are written as zone files and loaded with ``knotc reload``; :meth:`AuthoritativeDns.serve`
returns once the server answers for the new zone. Records are zone-file lines relative to the
origin, e.g. ``'@ TXT "v=spf1 ip4:127.0.0.1 -all"'``; :func:`txt` quotes and splits long values.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from mailstack.ports import free_port, wait_until
from mailstack.running import Running

HOST = "127.0.0.1"
# Low TTLs: what one test publishes is not cached long by the resolver under test.
DEFAULT_TTL = 30
_MAX_STRING = 255  # octets in one <character-string> of a TXT record (RFC 1035 3.3)


def txt(value: str) -> str:
    """``value`` as the quoted strings of one TXT record, split every 255 octets."""
    chunks = [value[i : i + _MAX_STRING] for i in range(0, len(value), _MAX_STRING)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


class AuthoritativeDns(Running):
    """``knotd`` serving the zones given to :meth:`serve`, on ``127.0.0.1:<free port>``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port(HOST)
        self._zones: dict[str, list[str]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._serial = 0

    @property
    def nameserver(self) -> str:
        """This server as one ``DNS_NAMESERVERS`` entry."""
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        knotd = knot_program("knotd")
        (self.workdir / "zones").mkdir(parents=True, exist_ok=True)
        (self.workdir / "db").mkdir(exist_ok=True)
        self._write_config()
        with (self.workdir / "knotd.log").open("ab") as log:
            self._process = subprocess.Popen(
                [knotd, "-c", str(self.workdir / "knot.conf")], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until((self.workdir / "knot.sock").exists, 15, "knotd control socket")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def logs(self, name: str = "knotd") -> str:
        return (self.workdir / "knotd.log").read_text(errors="replace")

    def serve(self, origin: str, records: list[str], ttl: int = DEFAULT_TTL) -> None:
        """Publish (or replace) the zone ``origin`` with ``records``, and wait until it answers."""
        origin = origin.rstrip(".").lower()
        self._serial += 1  # one serial for every zone written: a reload of any shows as new
        serial = self._serial
        lines = [
            f"$ORIGIN {origin}.",
            f"$TTL {ttl}",
            f"@ SOA ns hostmaster {serial} 3600 600 86400 {ttl}",
            "@ NS ns",
            f"ns A {HOST}",
            *records,
        ]
        (self.workdir / "zones" / f"{origin}.zone").write_text("\n".join(lines) + "\n")
        self._zones[origin] = records
        self._write_config()
        knotc(self.workdir, "reload")
        wait_until(lambda: self._answers(origin, serial), 15, f"zone {origin}")

    def _answers(self, origin: str, serial: int) -> bool:
        query = dns.message.make_query(origin, "SOA")
        try:
            response = dns.query.udp(query, HOST, port=self.port, timeout=1)
        except (dns.exception.Timeout, OSError):
            return False
        if response.rcode() != dns.rcode.NOERROR or not response.answer:
            return False
        return any(rdata.serial == serial for rdata in response.answer[0])

    def _write_config(self) -> None:
        write_knot_config(
            self.workdir, f"{HOST}@{self.port}", self.workdir / "zones", sorted(self._zones)
        )


def knot_program(name: str) -> str:
    """Where Knot's ``knotd`` or ``knotc`` is (Debian puts them in /usr/sbin)."""
    return shutil.which(name) or f"/usr/sbin/{name}"


def knotc(workdir: Path, command: str) -> str:
    """Run ``knotc command`` against the ``knotd`` of :func:`write_knot_config`'s ``workdir``."""
    socket = str(workdir / "knot.sock")
    return subprocess.run(
        [knot_program("knotc"), "-s", socket, command], capture_output=True, text=True, check=True
    ).stdout


def write_knot_config(workdir: Path, listen: str, zones: Path, origins: Iterable[str]) -> None:
    """``workdir/knot.conf``: a ``knotd`` with its control socket and database in ``workdir``,
    listening on ``listen`` (``ip@port``), serving ``zones/<origin>.zone`` for each origin (zone
    files are its only source: never written back, no journal)."""
    listed = "".join(f"  - domain: {origin}\n" for origin in origins)
    (workdir / "knot.conf").write_text(
        "server:\n"
        f'    rundir: "{workdir}"\n'
        f"    listen: {listen}\n"
        "database:\n"
        f'    storage: "{workdir}/db"\n'
        "log:\n"
        "  - target: stderr\n"
        "    any: warning\n"
        "template:\n"
        "  - id: default\n"
        f'    storage: "{zones}"\n'
        '    file: "%s.zone"\n'
        "    zonefile-sync: -1\n"
        "    zonefile-load: whole\n"
        "    journal-content: none\n" + (f"zone:\n{listed}" if listed else "")
    )
