"""Backups and mail sources as files, without a server: the tar headers equal tarfile's, crafted
archives refused by restore, mbox quoting undone, dates read from mbox From lines."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mailstore_api import mailsources, restore, tarheader

# Names as a backup has them (mail/<domain>/<local>/new|cur/<file>) and any others: long, non-ASCII
# (pax headers), lone surrogates (an undecodable file name, as os.listdir gives it).
_names = st.one_of(
    st.from_regex(
        r"mail/[a-z0-9.-]{1,40}/[a-z0-9._+-]{1,30}/(new|cur)/[!-~]{1,70}", fullmatch=True
    ),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=300),
    st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1, max_size=5),
)
_numbers = st.one_of(st.integers(0, 2**40), st.integers(8**11 - 2, 8**11 + 2))


@settings(max_examples=500)
@given(name=_names, size=_numbers, mtime=_numbers)
@example(name="x" * 100, size=0, mtime=0)
@example(name="x" * 101, size=0, mtime=0)
@example(name="é", size=8**11 - 1, mtime=8**11 - 1)
def test_tar_header_is_tarfiles(name: str, size: int, mtime: int) -> None:
    assert tarheader.header(name, size, mtime) == tarheader.pax_header(name, size, mtime)


def archive(*members: tarfile.TarInfo) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    out.seek(0)
    return out


def regular(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        regular("../outside"),
        regular("/etc/cron.d/evil"),
        regular("mail/example.org/bob/new/../../../../escape"),
        regular("mail/example.org/bob/tmp/1.2.host"),
        regular("something-else"),
        symlink("mail/example.org/bob/new/1.2.host", "/etc/shadow"),
    ],
    ids=["dotdot", "absolute", "dotdot-inside", "tmp", "unknown", "symlink"],
)
def test_restore_refuses_members_a_backup_cannot_have(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    target = tmp_path / "data"
    target.mkdir()
    with pytest.raises(restore.BadBackup, match="unexpected member"):
        restore.restore(archive(member), target)
    assert [p.name for p in target.iterdir()] == ["mailstore.lock"]
    assert not (tmp_path / "outside").exists()


def test_an_archive_without_manifest_is_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(restore.BadBackup, match="incomplete"):
        restore.verify(archive(regular("users.sqlite3")))
    with pytest.raises(restore.BadBackup, match="not a whole tar"):
        restore.verify(io.BytesIO(b"not a tar at all" * 100))


def test_mbox_unquoting_mboxrd_and_mboxo() -> None:
    quoted = b"a\n>From one\n>>From two\nFrom not at the start? no: >From x\n"
    assert (
        mailsources.unescape(quoted)
        == b"a\nFrom one\n>From two\nFrom not at the start? no: >From x\n"
    )
    assert mailsources.unescape(quoted, "mboxo") == (
        b"a\nFrom one\n>>From two\nFrom not at the start? no: >From x\n"
    )


def test_dates_of_from_lines() -> None:
    assert (
        mailsources.from_line_date(b"From bob@example.org Thu Nov 14 22:13:20 2023") == 1700000000
    )
    assert mailsources.from_line_date(b"From MAILER-DAEMON Sun Sep  6 12:26:40 2020") == 1599395200
    assert mailsources.from_line_date(b"From someone") is None
    assert mailsources.header_date(b"Date: Tue, 14 Nov 2023 23:13:20 +0100\n\nx") == 1700000000
