"""Let's Encrypt's test ACME server on loopback for tests: Debian's ``pebble``, with
``pebble-challtestsrv`` as its DNS server (every name resolves to 127.0.0.1).

Pebble validates HTTP-01 for real: it resolves the name through challtestsrv and fetches
``http://<name>:<http_port>/.well-known/acme-challenge/<token>``, so ``http_port`` is where the
client under test must answer (``ACME_HTTP_PORT``). ``PEBBLE_VA_NOSLEEP=1`` drops its random
validation delay; ``PEBBLE_WFE_NONCEREJECT=0`` its random rejection of good nonces (which the
client would retry, but a test should not depend on); ``PEBBLE_VA_ALWAYS_VALID`` stays unset.
Its directory is served over HTTPS with a certificate from a CA made here (:attr:`ca_file`, what
``ACME_CA_BUNDLE`` names); the root it signs with is :meth:`root_pem` (its management API).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

from mailstack.certs import ScratchCA
from mailstack.ports import free_port, tcp_ready, wait_until
from mailstack.running import Running

HOST = "127.0.0.1"


class Pebble(Running):
    """``pebble`` and ``pebble-challtestsrv`` as child processes, on free loopback ports."""

    def __init__(self, workdir: Path, validity_seconds: int = 0) -> None:
        self.workdir = workdir
        self.validity_seconds = validity_seconds  # 0: Pebble's default (about five years)
        self.port = free_port(HOST)
        self.management_port = free_port(HOST)
        self.http_port = free_port(HOST)
        self.dns_port = free_port(HOST)
        self.challtestsrv_port = free_port(HOST)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def directory_url(self) -> str:
        return f"https://{HOST}:{self.port}/dir"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the directory's HTTPS certificate (``ACME_CA_BUNDLE``)."""
        return self.workdir / "pebble-ca.pem"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()  # a ``with`` whose start fails does not call stop
            raise

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = ScratchCA.create("pebble directory CA")
        self.ca_file.write_bytes(ca.pem)
        cert, key = ca.write(self.workdir / "https", "localhost")
        settings: dict[str, object] = {
            "listenAddress": f"{HOST}:{self.port}",
            "managementListenAddress": f"{HOST}:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self.http_port,
            "tlsPort": free_port(HOST),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds:
            settings["certificateValidityPeriod"] = self.validity_seconds
        config = self.workdir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": settings}, indent=2))
        self._spawn(
            "pebble-challtestsrv",
            [
                "-defaultIPv4", HOST,
                "-defaultIPv6", "",
                "-dns01", f"{HOST}:{self.dns_port}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"{HOST}:{self.challtestsrv_port}",
            ],
            {},
        )  # fmt: skip
        wait_until(lambda: tcp_ready(HOST, self.challtestsrv_port), 15, "pebble-challtestsrv")
        self._spawn(
            "pebble",
            ["-config", str(config), "-dnsserver", f"{HOST}:{self.dns_port}"],
            {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        )
        wait_until(lambda: tcp_ready(HOST, self.management_port), 15, "pebble")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        binary = shutil.which(name) or f"/usr/bin/{name}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        self._processes[name] = subprocess.Popen(
            [binary, *args],
            env={**environment, **env},
            stdout=(self.workdir / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        for process in reversed(list(self._processes.values())):
            process.terminate()
            process.wait(10)
        self._processes.clear()

    def logs(self, name: str = "pebble") -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def root_pem(self) -> str:
        """The root Pebble issues under (made at its start; the management API's ``/roots/0``)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        url = f"https://{HOST}:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return str(response.read().decode())
