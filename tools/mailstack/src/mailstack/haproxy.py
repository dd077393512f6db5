"""The real HAProxy (Debian's ``/usr/sbin/haproxy``) running ``deploy/haproxy.cfg`` in front of
local replicas: the same file the compose and Swarm deployments run, with one ``server`` line per
local replica in place of each ``server-template`` line (local replicas differ by port, not by
address, which a template cannot express)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from mailstack.ports import free_port, tcp_ready, wait_until
from mailstack.processes import stop_process

HOST = "127.0.0.1"
#: The official image the deployment files name, and the local stand-in for engines without it.
OFFICIAL_IMAGE = "haproxy:2.6"
STAND_IN_IMAGE = "maildrop-test/haproxy:2.6"
_TEMPLATE = re.compile(r"^(\s*)server-template (\S+) \d+ \"[^\"]*:\d+\"(.*)$", re.MULTILINE)


def local_config(text: str, replicas: Mapping[str, Sequence[int]], stats_socket: Path) -> str:
    """``text`` (deploy/haproxy.cfg) with the backends' servers on ``127.0.0.1:<port>``:
    ``replicas`` maps each ``server-template`` name (smtp-in, pop3, pop3s) to the ports."""

    def servers(match: re.Match[str]) -> str:
        indent, name, options = match.groups()
        return "\n".join(
            f"{indent}server {name}{i} {HOST}:{port}{options}"
            for i, port in enumerate(replicas[name], 1)
        )

    text, count = _TEMPLATE.subn(servers, text)
    if count != len(replicas):
        raise ValueError(f"{count} server-template lines for {sorted(replicas)}")
    stats = f"    stats socket {stats_socket} mode 600 level admin\n"
    return text.replace("\nglobal\n", "\nglobal\n" + stats, 1)


class Balancer:
    """HAProxy on free loopback ports: ``ports["smtp"]``, ``ports["pop3"]``, ``ports["pop3s"]``."""

    def __init__(self, workdir: Path, config: Path, replicas: Mapping[str, Sequence[int]]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.ports = {"smtp": free_port(), "pop3": free_port(), "pop3s": free_port()}
        self.stats_socket = workdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(local_config(config.read_text(), replicas, self.stats_socket))
        self.log_path = workdir / "haproxy.log"
        env = {
            "SMTP_LISTEN": f"{HOST}:{self.ports['smtp']}",
            "POP3_LISTEN": f"{HOST}:{self.ports['pop3']}",
            "POP3S_LISTEN": f"{HOST}:{self.ports['pop3s']}",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(lambda: all(tcp_ready(HOST, p) for p in self.ports.values()), 20, "haproxy")

    def status(self) -> dict[str, str]:
        """Each server's state as HAProxy sees it (``"pop3/pop3s1"``: ``"UP"``, ``"DOWN"``...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        fields = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(fields, line.split(","), strict=False))
            if row.get("svname") not in (None, "", "FRONTEND", "BACKEND"):
                states[f"{row['pxname']}/{row['svname']}"] = row["status"].split(" ")[0]
        return states

    def wait_for(self, server: str, state: str, timeout: float = 30) -> None:
        wait_until(lambda: self.status().get(server) == state, timeout, f"{server} {state}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, 10)


def haproxy_image(stand_in: Path) -> str:
    """The official image when this Docker engine has it or can pull it; else the stand-in built
    from the Dockerfile in ``stand_in`` (Debian's HAProxy on the local Python base image)."""
    for attempt in (["image", "inspect", OFFICIAL_IMAGE], ["pull", OFFICIAL_IMAGE]):
        if subprocess.run(["docker", *attempt], capture_output=True, check=False).returncode == 0:
            return OFFICIAL_IMAGE
    subprocess.run(
        ["docker", "build", "-t", STAND_IN_IMAGE, str(stand_in)],
        capture_output=True,
        check=True,
        timeout=600,
    )
    return STAND_IN_IMAGE
