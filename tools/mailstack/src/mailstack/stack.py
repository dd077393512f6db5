"""The stack as local processes, with the same entry points and variables as docker-compose.yml.

``Stack`` picks free loopback ports, a data directory and fresh tokens, starts what it is asked for
and can stop, kill and restart each piece, which the fault tests use. Logs go to ``<workdir>/logs``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mailstack.logs import mark_http, mark_pop3, mark_smtp
from mailstack.ports import free_port, http_ok, scrape, tcp_ready, wait_until
from mailstack.processes import stop_process
from mailstack.running import Running

ALL_SERVICES = ("redis", "mailstore-api", "smtp-in", "pop3", "smtp-submit", "smtp-out")
#: What a Stack starts unless told: all but smtp-out, which only the tests that send to remote
#: domains need (they start it with a DNS server of their own); `mailstack` starts everything.
DEFAULT_SERVICES = tuple(name for name in ALL_SERVICES if name != "smtp-out")
MODULES = {
    "mailstore-api": "mailstore_api",
    "smtp-in": "smtp_in",
    "pop3": "pop3d",
    "smtp-submit": "smtp_submit",
    "smtp-out": "smtp_out",
}
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
#: What docker-compose.yml gives the mailstore (the reason is there): malloc's huge pages.
HUGE_PAGES = "glibc.malloc.hugetlb=1"


@dataclass
class Process:
    """One running piece of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    # Variables that differ from the stack's environment (a replica's own ports).
    extra_env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def with_huge_pages(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a mailstore: ``HUGE_PAGES`` added to GLIBC_TUNABLES unless it sets its own.

    glibc reads the variable only when a process starts, so the launcher sets it.
    """
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": f"{current}:{HUGE_PAGES}" if current else HUGE_PAGES}


class Stack(Running):
    """Redis, mailstore-api, smtp-in, pop3, smtp-submit and smtp-out as child processes of this
    one (smtp-out listens on nothing but its /metrics port, which tells it is up)."""

    kind = "local"

    def __init__(
        self,
        workdir: Path,
        services: tuple[str, ...] = DEFAULT_SERVICES,
        env: dict[str, str] | None = None,
        domains: str = "pokey.onl,example.test",
        hostname: str = "mail.pokey.onl",
    ) -> None:
        unknown = set(services) - set(ALL_SERVICES)
        if unknown:
            raise ValueError(f"unknown services: {sorted(unknown)}")
        self.workdir = workdir
        self.services = services
        self.data_dir = workdir / "data"
        self.secrets_dir = workdir / "secrets"
        self.redis_dir = workdir / "redis"
        self.log_dir = workdir / "logs"
        for d in (self.data_dir, self.secrets_dir, self.redis_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.admin_token = secrets.token_urlsafe(32)
        self.service_token = secrets.token_urlsafe(32)
        self.redis_port = free_port()
        self.api_port = free_port()
        self.smtp_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.submit_port = free_port()  # 587's STARTTLS submission
        self.submits_port = free_port()  # 465's implicit TLS submission
        # The /metrics listeners of the front ends (METRICS_PORT); the mailstore's is its API.
        self.smtp_metrics_port = free_port()
        self.pop3_metrics_port = free_port()
        self.submit_metrics_port = free_port()
        self.out_metrics_port = free_port()
        self.domains = domains
        self.hostname = hostname
        self.overrides = dict(env or {})
        self.processes: dict[str, Process] = {}
        self._replicas = 0

    # Addresses -------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def metrics_url(self, name: str) -> str:
        """Where ``name`` (a service or a replica) serves ``/metrics``."""
        if name.split("#", 1)[0] == "mailstore-api":
            return f"{self.api_url}/metrics"
        return f"http://{HOST}:{self.processes[name].ports['metrics']}/metrics"

    def metrics(self, name: str) -> str:
        """What ``name`` serves at ``/metrics`` now (the mailstore's with the admin token)."""
        return scrape(self.metrics_url(name), self.admin_token)

    def maildir(self, account: str) -> Path:
        """The Maildir of ``account`` (``local@domain``; a bare name is in the first domain)."""
        local, at, domain = account.rpartition("@")
        if not at:
            local, domain = account, self.domains.split(",")[0]
        return self.data_dir / "mail" / domain / local

    def environment(self) -> dict[str, str]:
        """The variables every service gets: what docker-compose.yml sets, on local ports."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                "MAIL_HOSTNAME": self.hostname,
                "MAIL_DOMAINS": self.domains,
                "ADMIN_TOKEN": self.admin_token,
                "SERVICE_TOKEN": self.service_token,
                "SECRETS_DIR": str(self.secrets_dir),
                "DATA_DIR": str(self.data_dir),
                "REDIS_URL": self.redis_url,
                "MAILSTORE_URL": self.api_url,
                "MAILSTORE_API_URL": self.api_url,
                "API_BIND_HOST": HOST,
                "API_BIND_PORT": str(self.api_port),
                "SMTP_BIND_HOST": HOST,
                "SMTP_BIND_PORT": str(self.smtp_port),
                "POP3_BIND_HOST": HOST,
                "POP3_BIND_PORT": str(self.pop3_port),
                "POP3S_BIND_PORT": str(self.pop3s_port),
                "SUBMIT_BIND_HOST": HOST,
                "SUBMIT_BIND_PORT": str(self.submit_port),
                "SUBMITS_BIND_PORT": str(self.submits_port),
                "METRICS_BIND_HOST": HOST,
            }
        )
        env.update(self.overrides)
        return env

    # Life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every configured service in dependency order and wait until each is ready."""
        try:
            for name in self.services:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything (SIGTERM, then SIGKILL after a grace period)."""
        for name in reversed(list(self.processes)):
            self.stop_service(name)

    def restart_all(self) -> None:
        """Stop every process, then start the stack again on the same data and ports."""
        self.stop()
        self.start()

    def _build(self, name: str) -> Process:
        log_path = self.log_dir / f"{name}.log"
        if name == "redis":
            redis = shutil.which("redis-server") or "/usr/bin/redis-server"
            argv = [
                redis,
                "--port", str(self.redis_port),
                "--bind", HOST,
                "--dir", str(self.redis_dir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
            ]  # fmt: skip
            return Process(name, argv, {}, log_path, {"redis": self.redis_port})
        base = name.split("#", 1)[0]
        argv = [sys.executable, "-m", MODULES[base]]
        ports = {
            "mailstore-api": {"api": self.api_port},
            "smtp-in": {"smtp": self.smtp_port, "metrics": self.smtp_metrics_port},
            "pop3": {
                "pop3": self.pop3_port,
                "pop3s": self.pop3s_port,
                "metrics": self.pop3_metrics_port,
            },
            "smtp-submit": {
                "submit": self.submit_port,
                "submits": self.submits_port,
                "metrics": self.submit_metrics_port,
            },
            "smtp-out": {"metrics": self.out_metrics_port},
        }[base]
        extra = {"METRICS_PORT": str(ports["metrics"])} if "metrics" in ports else {}
        return Process(name, argv, self.environment(), log_path, ports, extra)

    def start_service(self, name: str) -> Process:
        """Start (or restart) ``name`` and wait until it answers."""
        proc = self.processes.get(name) or self._build(name)
        if proc.running():
            return proc
        if proc.name == "mailstore-api":
            proc.env = with_huge_pages({**self.environment(), **proc.extra_env})
        elif proc.name != "redis":
            proc.env = {**self.environment(), **proc.extra_env}
        proc.log_file = proc.log_path.open("ab")
        proc.popen = subprocess.Popen(
            proc.argv,
            env=proc.env or None,
            stdout=proc.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = proc
        try:
            self._wait_ready(proc)
        except TimeoutError as exc:
            tail = proc.log_path.read_text(errors="replace")[-3000:]
            raise TimeoutError(f"{exc}\n--- {proc.log_path} ---\n{tail}") from exc
        return proc

    def _wait_ready(self, proc: Process) -> None:
        def probe() -> bool:
            if not proc.running():
                code = proc.popen.returncode if proc.popen else None
                raise RuntimeError(
                    f"{proc.name} exited with {code}:\n"
                    + proc.log_path.read_text(errors="replace")[-3000:]
                )
            if proc.name == "mailstore-api":
                return http_ok(f"{self.api_url}/readyz")
            return all(tcp_ready(HOST, port) for port in proc.ports.values())

        wait_until(probe, READY_TIMEOUT, proc.name)

    def signal_service(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to ``name`` without waiting."""
        proc = self.processes[name]
        if proc.popen and proc.running():
            proc.popen.send_signal(sig)

    def stop_service(self, name: str, grace: float = 15.0) -> int | None:
        """SIGTERM ``name``, SIGKILL it after ``grace`` seconds; returns its exit code."""
        proc = self.processes.get(name)
        if proc is None or proc.popen is None:
            return None
        stop_process(proc.popen, grace)
        if proc.log_file:
            proc.log_file.close()
            proc.log_file = None
        return proc.popen.returncode

    def kill_service(self, name: str) -> None:
        """SIGKILL ``name`` (a crash) and reap it."""
        proc = self.processes[name]
        if proc.popen and proc.running():
            proc.popen.kill()
            proc.popen.wait()
        if proc.log_file:
            proc.log_file.close()
            proc.log_file = None

    def start_replica(self, base: str, env: Mapping[str, str] | None = None) -> dict[str, int]:
        """Another instance of a front end (``"pop3"`` or ``"smtp-in"``) on its own free ports,
        with ``env`` added to its environment.

        Returns its ports by kind (``{"pop3": ..., "pop3s": ..., "metrics": ...}`` or
        ``{"smtp": ..., "metrics": ...}``).
        """
        self._replicas += 1
        name = f"{base}#{self._replicas}"
        proc = self._build(name)
        variables = {
            "smtp-in": {"smtp": "SMTP_BIND_PORT", "metrics": "METRICS_PORT"},
            "pop3": {
                "pop3": "POP3_BIND_PORT",
                "pop3s": "POP3S_BIND_PORT",
                "metrics": "METRICS_PORT",
            },
        }[base]
        proc.ports = {kind: free_port() for kind in variables}
        proc.extra_env = {
            **(env or {}),
            **{var: str(proc.ports[kind]) for kind, var in variables.items()},
        }
        self.processes[name] = proc
        return self.start_service(name).ports

    def read_secret(self, relative: str) -> bytes:
        """A file from the secrets directory, e.g. ``tls/cert.pem``."""
        return (self.secrets_dir / relative).read_bytes()

    def logs(self, name: str) -> str:
        """What ``name`` has written to its log so far (lines logged a moment ago may be missing:
        wait for them with ``wait_for_log``)."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_until_now(self, name: str) -> str:
        """The log of ``name`` with at least every line it logged before this call.

        The service is made to log a line of its own (``mailstack.logs``) and the log is read
        once that line is out; redis writes each line as it logs it.
        """
        proc = self.processes[name]
        base = name.split("#", 1)[0]
        if base == "mailstore-api":
            self.wait_for_log(name, mark_http(self.api_url))
        elif base == "smtp-in":
            self.wait_for_log(name, mark_smtp(HOST, proc.ports["smtp"]))
        elif base == "pop3":
            self.wait_for_log(name, mark_pop3(HOST, proc.ports["pop3"]))
        return self.logs(name)
