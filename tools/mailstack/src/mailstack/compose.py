"""The same interface as :class:`mailstack.stack.Stack`, over ``docker compose`` instead.

Used by the integration tests with ``STACK=compose``: a throwaway compose project on free host ports,
torn down with its volumes (``down -v``) at the end.
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
from pathlib import Path

from mailstack.ports import free_port, greets, wait_until
from mailstack.running import Running

HOST = "127.0.0.1"


class ComposeStack(Running):
    """A compose project built from this checkout, reachable on loopback ports."""

    kind = "compose"

    def __init__(
        self, repo: Path, env: dict[str, str] | None = None, compose_file: str | None = None
    ) -> None:
        self.repo = repo
        # Another compose file than the checkout's docker-compose.yml (deploy/...), if given.
        self.files = ("-f", compose_file) if compose_file else ()
        self.project = f"maildrop-test-{secrets.token_hex(4)}"
        self.admin_token = secrets.token_urlsafe(32)
        self.api_port = free_port()
        self.smtp_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.submit_port = free_port()
        self.submits_port = free_port()
        self.variables = {
            "ADMIN_TOKEN": self.admin_token,
            "API_PORT": str(self.api_port),
            "SMTP_PORT": str(self.smtp_port),
            "POP3_PORT": str(self.pop3_port),
            "POP3S_PORT": str(self.pop3s_port),
            "SUBMIT_PORT": str(self.submit_port),
            "SUBMITS_PORT": str(self.submits_port),
            "ACME_HTTP_PORT_PUBLISHED": str(free_port()),
            "MAIL_DOMAINS": "pokey.onl,example.test",
            "MAIL_HOSTNAME": "mail.pokey.onl",
            "POP3_ALLOW_PLAINTEXT_AUTH": "true",
            **(env or {}),
        }
        self._replicas: list[str] = []

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @functools.cached_property
    def service_token(self) -> str:
        """SERVICE_TOKEN: compose leaves it unset, so the mailstore generated it onto the secrets
        volume (as :class:`mailstack.stack.Stack` has its own)."""
        return self.read_secret("service_token").decode().strip()

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        """Run ``docker compose -p <project> ARGS`` in the checkout; returns its output."""
        result = subprocess.run(
            ["docker", "compose", "-p", self.project, *self.files, *args],
            cwd=self.repo,
            env={**os.environ, **self.variables},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def start(self) -> None:
        try:
            self.compose("up", "-d", "--build", "--wait", "--wait-timeout", "180")
        except BaseException:
            self.stop()  # what did start (containers, networks, volumes) does not linger
            raise

    def stop(self) -> None:
        for name in self._replicas:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)

    def restart_all(self) -> None:
        """``docker compose down`` (containers and network gone, volumes kept), then ``up`` again."""
        self.compose("down", "--timeout", "20")
        self.start()

    def stop_service(self, name: str) -> None:
        self.compose("stop", name)

    def kill_service(self, name: str) -> None:
        self.compose("kill", name)

    def start_service(self, name: str) -> None:
        self.compose("up", "-d", "--wait", "--wait-timeout", "120", name)

    def start_replica(self, base: str) -> dict[str, int]:
        """A second container of ``base`` on the project's network, published on new host ports."""
        inner = {"pop3": {"pop3": 1110, "pop3s": 1995}, "smtp-in": {"smtp": 2525}}[base]
        ports = {kind: free_port() for kind in inner}
        name = f"{self.project}-{base}-replica{len(self._replicas) + 1}"
        publish = [arg for kind, p in inner.items() for arg in ("-p", f"{HOST}:{ports[kind]}:{p}")]
        self.compose("run", "-d", "--no-deps", "--name", name, *publish, base)
        self._replicas.append(name)
        # The implicit-TLS port greets only after a handshake; the plain one tells readiness.
        plain = ports["pop3" if base == "pop3" else "smtp"]
        wait_until(functools.partial(greets, HOST, plain), 60, f"{base} replica")
        return ports

    def read_secret(self, relative: str) -> bytes:
        """A file from the shared secrets volume, e.g. ``tls/cert.pem``."""
        return self.compose("exec", "-T", "mailstore-api", "cat", f"/secrets/{relative}").encode()

    def logs(self, name: str) -> str:
        """What ``name`` has written to its log so far (lines logged a moment ago may be missing:
        wait for them with ``wait_for_log``)."""
        return self.compose("logs", "--no-color", "--no-log-prefix", name, check=False)
