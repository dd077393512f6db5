"""Independent verdicts to compare with: libspf2's ``spfquery`` and OpenDKIM's ``opendkim-testmsg``.

Neither tool can be pointed at a nameserver: both read /etc/resolv.conf and ask port 53. So they
run in a network and mount namespace of their own (``unshare``, root only), where loopback is
private, /etc/resolv.conf is bind-mounted to ``nameserver 127.0.0.1``, and a second ``knotd``
listens on 127.0.0.1:53 serving the very zone files that the tests' :class:`AuthoritativeDns`
writes. (Imported by name: conftest puts this directory on sys.path.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mailstack.dnsserver import AuthoritativeDns, knot_program, knotc, write_knot_config
from mailstack.ports import wait_until
from mailstack.running import Running

_SERIAL_IN_FILE = re.compile(r"^@ SOA \S+ \S+ (\d+) ", re.MULTILINE)
_SERIAL_IN_STATUS = re.compile(r"^\[(\S+)\.\] .*serial: (\d+)", re.MULTILINE)
_RECEIVED_SPF = re.compile(r"^Received-SPF: (\w+)", re.MULTILINE)
# Where libspf2 has an error it prints an error block and the bare line "(invalid)", no
# Received-SPF: a temporary DNS failure is RFC 7208's temperror, any other (a policy that does
# not compile) its permerror.
_INVALID = re.compile(r"^\(invalid\)$", re.MULTILINE)
_OPENDKIM_STATUS = re.compile(r"^opendkim-testmsg: dkim_\w+\(\): (.+)$", re.MULTILINE)
_TEMPORARY = re.compile(r"^Error: Temporary DNS failure", re.MULTILINE)


class ReferenceTools(Running):
    """``spfquery`` and ``opendkim-testmsg`` against the zones ``dns_server`` publishes."""

    def __init__(self, dns_server: AuthoritativeDns, workdir: Path) -> None:
        self.zones = dns_server.workdir / "zones"
        self.workdir = workdir
        self._holder: subprocess.Popen[str] | None = None
        self._knotd: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        (self.workdir / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1\n")
        self._write_config()
        # The namespace lives as long as this process: every tool is run inside it by nsenter.
        setup = (
            "ip link set lo up && mount --bind "
            f"{self.workdir / 'resolv.conf'} /etc/resolv.conf && echo ready && exec sleep infinity"
        )
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", setup],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            raise RuntimeError("could not set up the reference tools' network namespace")
        knotd = knot_program("knotd")
        self._knotd = subprocess.Popen(
            [*self._inside(), knotd, "-c", str(self.workdir / "knot.conf")],
            stdout=(self.workdir / "knotd.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until((self.workdir / "knot.sock").exists, 15, "reference knotd control socket")

    def stop(self) -> None:
        for process in (self._knotd, self._holder):
            if process is not None:
                process.terminate()
                process.wait(10)
        self._knotd = self._holder = None

    def logs(self, name: str = "knotd") -> str:
        return (self.workdir / "knotd.log").read_text(errors="replace")

    def spfquery(self, *, ip: str, mail_from: str, helo: str) -> str:
        """libspf2's result word, as in its Received-SPF field. spfquery has no HELO-only
        query: an empty MAIL FROM is given as postmaster@<helo>, as RFC 7208 2.3 defines it."""
        self._sync()
        sender = mail_from or f"postmaster@{helo}"
        output = self._run(["spfquery", "-ip", ip, "-sender", sender, "-helo", helo])
        match = _RECEIVED_SPF.search(output)
        if match is None and _INVALID.search(output):
            return "temperror" if _TEMPORARY.search(output) else "permerror"
        if match is None:
            raise AssertionError(f"spfquery gave no result:\n{output}")
        return match.group(1)

    def opendkim(self, message: bytes) -> str:
        """libopendkim's verdict: ``"OK"`` when it accepts the message (it needs one good
        signature), else the status it prints, e.g. ``"Bad signature"``, ``"Syntax error"``."""
        self._sync()
        process = subprocess.run(
            [*self._inside(), "opendkim-testmsg"],
            input=message.replace(b"\r\n", b"\n"),
            capture_output=True,
            check=False,
            timeout=30,
        )
        output = (process.stdout + process.stderr).decode(errors="replace").strip()
        if process.returncode == 0 and not output:
            return "OK"
        match = _OPENDKIM_STATUS.search(output)
        if match is None:
            raise AssertionError(f"opendkim-testmsg: exit {process.returncode}:\n{output}")
        return match.group(1)

    def _inside(self) -> list[str]:
        assert self._holder is not None, "not started"
        return ["nsenter", "-t", str(self._holder.pid), "-n", "-m"]

    def _run(self, command: list[str]) -> str:
        process = subprocess.run(
            [*self._inside(), *command], capture_output=True, text=True, timeout=30, check=False
        )
        return process.stdout + process.stderr

    def _sync(self) -> None:
        """Load every zone file as it is now, and wait until each answers with its serial."""
        wanted = {
            path.name.removesuffix(".zone"): match.group(1)
            for path in self.zones.glob("*.zone")
            if (match := _SERIAL_IN_FILE.search(path.read_text()))
        }
        self._write_config()
        knotc(self.workdir, "reload")
        wait_until(lambda: self._serials() == wanted, 15, "reference knotd zones")

    def _serials(self) -> dict[str, str]:
        return dict(_SERIAL_IN_STATUS.findall(knotc(self.workdir, "zone-status")))

    def _write_config(self) -> None:
        origins = [path.name.removesuffix(".zone") for path in sorted(self.zones.glob("*.zone"))]
        write_knot_config(self.workdir, "127.0.0.1@53", self.zones, origins)
