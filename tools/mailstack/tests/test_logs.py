"""Waiting for log lines: a line written later is waited for; a mark proves the log is complete."""

from __future__ import annotations

import json
import poplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack.logs import records, wait_for_records
from mailstack.stack import Stack


def test_records_are_the_json_objects_of_the_lines() -> None:
    text = 'plain text\n{"event": "a", "n": 1}\npop3-1  | {"event": "b"}\n{broken\n[1, 2]\n'
    assert records(text) == [{"event": "a", "n": 1}, {"event": "b"}]


def test_a_line_written_later_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text(json.dumps({"event": "start"}) + "\n")
    lines = [{"event": "session", "user": "ann", "n": n} for n in range(2)]

    def write_later() -> None:
        with log.open("a") as out:
            for line in lines:
                out.write(json.dumps(line) + "\n")

    timer = threading.Timer(0.5, write_later)
    timer.start()
    try:
        found = wait_for_records(log.read_text, {"event": "session", "user": "ann"}, count=2)
    finally:
        timer.join()
    assert found == lines


def test_a_line_that_never_comes_times_out_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text(json.dumps({"event": "start"}) + "\n")
    with pytest.raises(TimeoutError, match='"event": "start"'):
        wait_for_records(log.read_text, lambda r: r.get("event") == "never", timeout=0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"POP3_ALLOW_PLAINTEXT_AUTH": "true"}
    with Stack(tmp_path_factory.mktemp("logs"), env=env) as running:
        yield running


@pytest.mark.parametrize("name", ["mailstore-api", "smtp-in", "pop3", "redis"])
def test_each_service_logs_its_mark(stack: Stack, name: str) -> None:
    assert stack.logs_until_now(name)  # waits for the mark's line (TimeoutError otherwise)


def test_logs_until_now_holds_a_session_that_just_ended(stack: Stack) -> None:
    # Without the mark, this line is usually still in pop3's buffer right after QUIT.
    pop = poplib.POP3("127.0.0.1", stack.pop3_port, timeout=30)
    peer = "{}:{}".format(*pop.sock.getsockname()[:2])
    pop.capa()
    pop.quit()
    sessions = [r for r in records(stack.logs_until_now("pop3")) if r.get("event") == "session"]
    assert peer in [r["peer"] for r in sessions]
