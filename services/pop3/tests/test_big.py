"""A 25 MiB message: retrieved byte-exact, streamed with bounded memory, slow reader included."""

from __future__ import annotations

import socket
import threading
import time

import psutil
from mailstack.stack import Stack
from pop3kit import Mail, Raw

MiB = 1024 * 1024


def big_message(size: int) -> bytes:
    head = b"Subject: big\nX-Test: 25 MiB\n\n"
    pattern = b".starts with a dot\nplain line of text 0123456789\n..\n.\nfinal words\n"
    body = (pattern * (size // len(pattern) + 1))[: size - len(head) - 1]
    return head + body + b"\n"


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)  # the sampling period: no event marks a peak

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def test_25_mib_byte_exact_with_bounded_memory(stack: Stack, mail: Mail, pop3_pid: int) -> None:
    stored = big_message(25 * MiB - 64 * 1024)  # within the mailstore's 25 MiB limit
    user, pw = mail.user()
    mail.deliver(user, stored)
    expected_w = len(stored) + stored.count(b"\n")

    r = Raw(stack.pop3_port, timeout=120)
    r.line()
    r.cmd(f"USER {user}")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    assert r.cmd("LIST 1") == f"+OK 1 {expected_w}".encode()

    baseline = psutil.Process(pop3_pid).memory_info().rss
    meter = PeakRss(pop3_pid)
    meter.start()
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert r.cmd("RETR 1") == f"+OK {expected_w} octets".encode()
    # A slow reader first: 1 MiB, then a pause during which the server must wait, not buffer.
    got = bytearray(r.file.read(MiB))
    time.sleep(1.5)  # the behaviour: a reader that pauses; the server must not buffer meanwhile
    paused_rss = psutil.Process(pop3_pid).memory_info().rss
    while not got.endswith(b"\r\n.\r\n"):
        chunk = r.file.read1(1 << 20)
        assert chunk, "connection closed early"
        got += chunk
    peak = meter.stop()

    encoded = stored.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
    assert bytes(got) == encoded + b".\r\n"
    # What the client keeps after removing byte-stuffing is exactly W octets.
    unstuffed = bytes(got[:-3]).replace(b"\r\n..", b"\r\n.")
    assert len(unstuffed) == expected_w
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    growth = peak - baseline
    print(
        f"pop3 RSS baseline {baseline / MiB:.1f} MiB, paused +{(paused_rss - baseline) / MiB:.1f}, peak +{growth / MiB:.1f}"
    )
    assert paused_rss - baseline < 8 * MiB, (baseline, paused_rss)
    assert growth < 12 * MiB, f"pop3 RSS grew by {growth / MiB:.1f} MiB for a 25 MiB message"


def test_top_of_a_large_message_is_cut_early(stack: Stack, mail: Mail) -> None:
    stored = b"Subject: large\nX-A: 1\n\n" + b"".join(b".line %d\n" % i for i in range(40000))
    user, pw = mail.user()
    mail.deliver(user, stored)
    r = Raw(stack.pop3_port)
    r.line()
    r.cmd(f"USER {user}")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    assert r.cmd("TOP 1 3").startswith(b"+OK")
    assert r.multi() == [b"Subject: large", b"X-A: 1", b"", b"..line 0", b"..line 1", b"..line 2"]
    assert r.cmd("NOOP") == b"+OK"  # the session goes on after the stream was cut
    r.send(b"RETR 1\r\n")
    w = len(stored) + stored.count(b"\n")
    assert r.line() == f"+OK {w} octets".encode()
    assert len(r.multi()) == 40003
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()


def test_mailstore_failure_mid_retr_and_at_login(stack: Stack, mail: Mail) -> None:
    """The mailstore dies while a message streams: the client sees the connection close without
    the terminating '.', never a truncated message that looks complete; logins get [SYS/TEMP]."""
    stored = big_message(20 * MiB)
    user, pw = mail.user()
    mail.deliver(user, stored)
    r = Raw(stack.pop3_port, timeout=60)
    r.line()
    r.cmd(f"USER {user}")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert r.cmd("RETR 1").startswith(b"+OK")
    got = bytearray(r.file.read(MiB))
    stack.kill_service("mailstore-api")
    try:
        while chunk := r.file.read1(1 << 20):
            got += chunk
        assert not got.endswith(b"\r\n.\r\n")
        assert len(got) < len(stored)
        r.close()
        other = Raw(stack.pop3_port)
        other.line()
        other.cmd(f"USER {user}")
        assert other.cmd(f"PASS {pw}").startswith(b"-ERR [SYS/TEMP]")
        other.close()
    finally:
        stack.start_service("mailstore-api")
    assert mail.messages(user) != []
