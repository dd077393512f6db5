"""A volume of the release before domains (tests/fixtures/volume-f52a741) under this release:
every message, password and APOP secret intact, POP3 UIDLs unchanged (a client with ``keep on``
must not download everything again), and a second start changes nothing."""

from __future__ import annotations

import json
import os
import poplib
import tarfile
from pathlib import Path
from typing import Any

import pytest
from mailstack.stack import Stack

pytestmark = pytest.mark.local_only  # it starts the stack on a data directory of its own
FIXTURE = Path(__file__).parent / "fixtures" / "volume-f52a741"
HOST = "127.0.0.1"


def pop3_view(stack: Stack, manifest: dict[str, Any]) -> dict[str, list[tuple[str, bytes]]]:
    """Per user: (UIDL, Subject line) of every message, through POP3 USER/PASS."""
    view = {}
    for user, password in manifest["passwords"].items():
        client = poplib.POP3(HOST, stack.pop3_port, timeout=30)
        client.user(user)
        client.pass_(password)
        uidls = [line.split()[1].decode() for line in client.uidl()[1]]
        subjects = [
            next(x for x in client.top(i, 0)[1] if x.startswith(b"Subject:"))
            for i in range(1, len(uidls) + 1)
        ]
        client.quit()
        view[user] = list(zip(uidls, subjects, strict=True))
    return view


def test_the_old_volume_migrates_in_place(tmp_path: Path) -> None:
    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    with tarfile.open(FIXTURE / "volume.tar.gz") as tar:
        tar.extractall(tmp_path, filter="tar")  # data/: the volume as the old release left it
    env = {
        "SERVICE_TOKEN": manifest["service_token"],
        "ADMIN_TOKEN": manifest["admin_token"],
        "APOP_ENABLED": "true",
        "POP3_ALLOW_PLAINTEXT_AUTH": "true",
    }
    with Stack(tmp_path, env=env, domains=manifest["domains"]) as stack:
        view = pop3_view(stack, manifest)
        for user, subjects in manifest["subjects"].items():
            assert [uidl for uidl, _ in view[user]] == manifest["uidls"][user]
            assert [s.decode() for _, s in view[user]] == [f"Subject: {s}" for s in subjects]
        apop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
        apop.apop("carol.x", manifest["apop"]["carol.x"])
        apop.quit()
        # The Maildirs are under the primary domain now; the one message sent to alice and bob
        # is still one file linked twice.
        mail = tmp_path / "data" / "mail"
        assert sorted(p.name for p in mail.iterdir()) == ["pokey.onl"]
        shared = manifest["uidls"]["bob"][-1]
        a, b = (mail / "pokey.onl" / u / "new" / shared for u in ("alice", "bob"))
        assert os.stat(a).st_ino == os.stat(b).st_ino
        files = sorted(str(p.relative_to(tmp_path)) for p in mail.rglob("*"))
        stack.restart_all()  # a second start does nothing
        assert sorted(str(p.relative_to(tmp_path)) for p in mail.rglob("*")) == files
        assert pop3_view(stack, manifest) == view
