"""Redis with Sentinel as local processes: a master, a replica and three sentinels.

``SentinelGroup`` starts them on free loopback ports with short timeouts (a master is down after
``down_after_ms`` and the failover follows within a few seconds), gives the stack the variables
that point every service at the sentinels, and can kill the master and wait for the sentinels to
name the replica in its place. ``replication_cut()`` keeps the master's writes from the
replica, so a failover meanwhile loses them, as it can with an asynchronous replica in
production.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import redis

from mailstack.ports import free_port, tcp_ready, wait_until
from mailstack.processes import stop_process
from mailstack.running import Running

HOST = "127.0.0.1"
QUORUM = 2
READY_TIMEOUT = 30.0


class SentinelGroup(Running):
    """Two ``redis-server`` processes (the master first) and three ``redis-sentinel`` ones."""

    def __init__(
        self,
        workdir: Path,
        name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.server_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}
        workdir.mkdir(parents=True, exist_ok=True)

    # What the services are given -------------------------------------------------------------
    @property
    def sentinels(self) -> str:
        """``REDIS_SENTINELS``: the three sentinels as ``host:port,...``."""
        return ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)

    def environment(self) -> dict[str, str]:
        """The variables that make a service find the master through these sentinels (REDIS_URL
        names a closed port: only its database number still counts)."""
        return {
            "REDIS_SENTINELS": self.sentinels,
            "REDIS_SENTINEL_MASTER": self.name,
            "REDIS_URL": f"redis://{HOST}:1/0",
        }

    # Life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the master, the replica (synced) and the sentinels (each seeing the replica and
        the two other sentinels)."""
        try:
            master, replica = self.server_ports
            self._spawn(master, self._server_argv(master))
            self._spawn(replica, [*self._server_argv(replica), "--replicaof", HOST, str(master)])
            wait_until(lambda: self._linked(replica), READY_TIMEOUT, "the replica's sync")
            for port in self.sentinel_ports:
                self._spawn(port, [self._binary("redis-sentinel"), str(self._sentinel_conf(port))])
            wait_until(self._sentinels_agree, READY_TIMEOUT, "the sentinels")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for port in reversed(list(self._popens)):
            stop_process(self._popens.pop(port), grace=5.0)
            self._logs.pop(port).close()

    def logs(self, name: str) -> str:
        """The log of the process on port ``name``."""
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    # Failover --------------------------------------------------------------------------------
    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError), self.client(port) as sentinel:
                return int(sentinel.sentinel_get_master_addr_by_name(self.name)[1])
        raise RuntimeError("no sentinel answers")

    def replica_port(self) -> int:
        """The port of the server that is not the master."""
        master = self.master_port()
        return next(port for port in self.server_ports if port != master)

    def kill_master(self) -> int:
        """SIGKILL the master (no shutdown, nothing saved); returns its port."""
        port = self.master_port()
        popen = self._popens[port]
        popen.kill()
        popen.wait()
        return port

    def demote_master(self) -> int:
        """Ask a sentinel for a failover while the master runs (``SENTINEL FAILOVER``): the
        master is made a replica of the new one, and clients still connected to it meet
        ``READONLY``; returns the old master's port."""
        port = self.master_port()
        with self.client(self.sentinel_ports[0]) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", self.name)
        return port

    def wait_failover(self, old: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel names a master other than ``old`` and that server says it
        is a master; returns its port."""

        def promoted() -> int | None:
            named = set()
            for port in self.sentinel_ports:
                with self.client(port) as sentinel:
                    named.add(int(sentinel.sentinel_get_master_addr_by_name(self.name)[1]))
            if len(named) != 1 or old in named:
                return None
            new = named.pop()
            with self.client(new) as server:
                return new if server.execute_command("ROLE")[0] == b"master" else None

        return wait_until(promoted, timeout, "the failover")

    @contextlib.contextmanager
    def replication_cut(self) -> Iterator[None]:
        """While inside, nothing the master writes reaches the replica: its link is dropped and
        cannot be made again (the replica now authenticates as a user the master does not
        have). The sentinels still see the replica and may promote it, its copy that much behind,
        as an asynchronous replica can be in production. On leaving, it may sync again."""
        replica = self.replica_port()
        with self.client(replica) as server:
            server.config_set("masteruser", "nobody")
            server.config_set("masterauth", "cut")
            server.execute_command("CLIENT", "KILL", "TYPE", "master")
            wait_until(lambda: not self._linked(replica), READY_TIMEOUT, "the cut")
        try:
            yield
        finally:
            with self.client(replica) as server:
                server.config_set("masteruser", "")
                server.config_set("masterauth", "")

    def client(self, port: int) -> redis.Redis:
        """A synchronous client for the server or sentinel on ``port``."""
        return redis.Redis(HOST, port, socket_timeout=5.0, socket_connect_timeout=2.0)

    # Helpers ---------------------------------------------------------------------------------
    def _binary(self, name: str) -> str:
        return shutil.which(name) or f"/usr/bin/{name}"

    def _server_argv(self, port: int) -> list[str]:
        data = self.workdir / f"redis-{port}"
        data.mkdir(exist_ok=True)
        return [
            self._binary("redis-server"),
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(data),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip

    def _sentinel_conf(self, port: int) -> Path:
        master = self.server_ports[0]
        conf = self.workdir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind {HOST}\ndir {self.workdir}\n"
            f"sentinel monitor {self.name} {HOST} {master} {QUORUM}\n"
            f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        return conf

    def _spawn(self, port: int, argv: list[str]) -> None:
        log = (self.workdir / f"{port}.log").open("ab")
        self._logs[port] = log
        self._popens[port] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: self._answers(port), READY_TIMEOUT, f"redis on {port}")

    def _answers(self, port: int) -> bool:
        popen = self._popens[port]
        if popen.poll() is not None:
            raise RuntimeError(f"the process on {port} exited:\n{self.logs(str(port))[-2000:]}")
        return tcp_ready(HOST, port)

    def _linked(self, replica: int) -> bool:
        with self.client(replica) as server:
            info: dict[str, Any] = server.info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            with self.client(port) as sentinel:
                state: dict[str, Any] = sentinel.sentinel_master(self.name)
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True
