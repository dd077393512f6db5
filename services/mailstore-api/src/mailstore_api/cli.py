"""``mailctl``: the admin CLI, a thin client of the admin REST API.

Configuration: ``MAILSTORE_API_URL`` (default http://127.0.0.1:8080); the admin token from
``ADMIN_TOKEN``, else the file ``$SECRETS_DIR/admin_token`` (``SECRETS_DIR`` default /secrets).
``backup --local``, ``verify`` and ``restore`` work on files without the server (``restore`` on ``DATA_DIR``, default
/data, which it locks as the mailstore does, so it refuses while one runs there).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn
from urllib.parse import quote

import typer

from mailstore_api import mailsources
from mailstore_api.backup import write_backup
from mailstore_api.db import DATABASE_FILE
from mailstore_api.maildir import MailStore
from mailstore_api.volume import VolumeBusy

if TYPE_CHECKING:  # imported where a call is made: the commands that do without start faster
    import httpx

    from mailstore_api import restore

#: Output buffer of ``backup``: the tar comes in pieces of 512 octets and up.
COPY_BUFFER = 1 << 20

app = typer.Typer(
    help="Manage the mail drop's domains, users, aliases and mailboxes.", no_args_is_help=True
)
domain_app = typer.Typer(help="Domains: add, list, dns, del.", no_args_is_help=True)
user_app = typer.Typer(help="Users: add, list, passwd, quota, del.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases: add, list, del.", no_args_is_help=True)
mail_app = typer.Typer(help="Mailboxes: list messages.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens: show the admin token.", no_args_is_help=True)
admin_app = typer.Typer(help="The web console's admin: passwd.", no_args_is_help=True)
queue_app = typer.Typer(help="The outbound queue: list, show, retry, drop.", no_args_is_help=True)
app.add_typer(domain_app, name="domain")
app.add_typer(user_app, name="user")
app.add_typer(alias_app, name="alias")
app.add_typer(mail_app, name="mail")
app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")
app.add_typer(queue_app, name="queue")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"mailctl: {message}", err=True)
    raise typer.Exit(1)


def _admin_token() -> str:
    configured = os.environ.get("ADMIN_TOKEN", "").strip()
    if configured:
        return configured
    path = Path(os.environ.get("SECRETS_DIR", "/secrets")) / "admin_token"
    try:
        return path.read_text().strip()
    except OSError as exc:
        _fail(
            f"no admin token: ADMIN_TOKEN is not set and {path} cannot be read "
            f"({exc.strerror}); the mailstore writes it there on first start"
        )


def _base_url() -> str:
    return os.environ.get("MAILSTORE_API_URL", "http://127.0.0.1:8080").rstrip("/")


def _httpx() -> Any:
    """httpx, imported on first use (half a second of start-up that ``backup --local``,
    ``verify`` and ``restore`` do without)."""
    import httpx  # noqa: PLC0415

    return httpx


def _client(timeout: float | None = 30.0) -> httpx.Client:
    client: httpx.Client = _httpx().Client(
        base_url=_base_url() + "/api/v1",
        headers={"Authorization": f"Bearer {_admin_token()}"},
        timeout=timeout,
    )
    return client


def _call(
    method: str, path: str, client: httpx.Client | None = None, **kwargs: Any
) -> httpx.Response:
    """One call of the admin API (on ``client``, else a new one); fails on an error answer."""
    try:
        if client is not None:
            response = client.request(method, path, **kwargs)
        else:
            with _client() as own:
                response = own.request(method, path, **kwargs)
    except _httpx().HTTPError as exc:
        _fail(f"cannot reach the mailstore at {_base_url()}: {exc or type(exc).__name__}")
    _check(response)
    return response


def _check(response: httpx.Response) -> None:
    if response.is_error:
        try:
            error = response.json()["error"]
            _fail(f"{error['message']} ({error['code']}, HTTP {response.status_code})")
        except (ValueError, KeyError, TypeError):
            _fail(f"HTTP {response.status_code}: {response.text[:200]}")


def _password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        _fail("the password must not be empty")
    return password


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@domain_app.command("add")
def domain_add(name: str) -> None:
    """Add a domain to receive mail for (a Unicode name is stored in A-labels)."""
    domain = _call("POST", "/domains", json={"name": name}).json()
    typer.echo(f"added {domain['name']}" + _unicode_note(domain))


def _unicode_note(domain: dict[str, Any]) -> str:
    return f" ({domain['unicode']})" if domain["unicode"] != domain["name"] else ""


@domain_app.command("list")
def domain_list(as_json: Json = False) -> None:
    """List domains with their account and alias counts."""
    data = _call("GET", "/domains").json()
    if as_json:
        _print_json(data)
        return
    typer.echo(f"{'DOMAIN':<40} {'ACCOUNTS':>8} {'ALIASES':>8}")
    for domain in data["domains"]:
        name = domain["name"] + _unicode_note(domain) + (" *" if domain["primary"] else "")
        typer.echo(f"{name:<40} {domain['accounts']:>8} {domain['aliases']:>8}")
    typer.echo("* primary domain: bare user names are in it")


@domain_app.command("dns")
def domain_dns(name: str, as_json: Json = False) -> None:
    """Print the DNS records to publish for a domain, as zone-file lines (each after a comment
    saying what it is for); its DKIM keys are generated if it has none yet."""
    data = _call("GET", f"/domains/{_path(name)}/dns").json()
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for record in data["records"]:
        typer.echo(f"; {record['why']}")
        typer.echo(record["zone_line"])


@domain_app.command("del")
def domain_del(
    name: str,
    force: Annotated[
        bool, typer.Option("--force", help="Also delete its accounts (and their mail) and aliases.")
    ] = False,
) -> None:
    """Remove a domain (refused while it has accounts or aliases, unless --force)."""
    _call("DELETE", f"/domains/{_path(name)}", params={"force": "true" if force else "false"})
    typer.echo(f"deleted {name}")


def _path(name: str) -> str:
    return quote(name, safe="@")


@user_app.command("add")
def user_add(
    username: str,
    password_stdin: PasswordStdin = False,
    quota: Annotated[
        int | None, typer.Option("--quota", min=0, help="Octets it may store; 0: unlimited.")
    ] = None,
) -> None:
    """Create a user, ``local@domain`` or a bare name in the primary domain (prompts for the
    password twice unless --password-stdin)."""
    password = _password(password_stdin)
    body: dict[str, Any] = {"username": username, "password": password}
    if quota is not None:
        body["quota_bytes"] = quota
    user = _call("POST", "/users", json=body).json()
    typer.echo(f"created {user['username']}")


@user_app.command("list")
def user_list(
    as_json: Json = False,
    domain: Annotated[str | None, typer.Option("--domain", help="Only this domain's.")] = None,
) -> None:
    """List users with their message count, size and quota."""
    params = {"domain": domain} if domain else {}
    data = _call("GET", "/users", params=params).json()
    if as_json:
        _print_json(data)
        return
    typer.echo(f"{'USER':<40} {'MESSAGES':>8} {'BYTES':>12} {'QUOTA':>12}  CREATED")
    for user in data["users"]:
        quota = str(user["quota_bytes"]) if user["quota_bytes"] else "-"
        typer.echo(
            f"{user['username']:<40} {user['messages']:>8} {user['bytes']:>12} {quota:>12}  "
            f"{user['created_at']}"
        )


@user_app.command("quota")
def user_quota(
    username: str,
    quota_bytes: Annotated[int, typer.Argument(min=0, help="Octets; 0: unlimited.")],
    messages: Annotated[
        int | None, typer.Option("--messages", min=0, help="At most this many messages; 0: any.")
    ] = None,
) -> None:
    """Set a user's quota."""
    body: dict[str, Any] = {"quota_bytes": quota_bytes}
    if messages is not None:
        body["quota_messages"] = messages
    user = _call("PATCH", f"/users/{_path(username)}", json=body).json()
    typer.echo(f"quota of {user['username']}: {user['quota_bytes'] or 'unlimited'} octets")


@user_app.command("passwd")
def user_passwd(username: str, password_stdin: PasswordStdin = False) -> None:
    """Change a user's password."""
    password = _password(password_stdin)
    _call("PUT", f"/users/{_path(username)}/password", json={"password": password})
    typer.echo(f"password changed for {username}")


@user_app.command("del")
def user_del(
    username: str,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the user's mail.")] = False,
) -> None:
    """Delete a user (refused while mail remains, unless --purge)."""
    _call("DELETE", f"/users/{_path(username)}", params={"purge": "true" if purge else "false"})
    typer.echo(f"deleted {username}")


@alias_app.command("add")
def alias_add(
    address: Annotated[
        str, typer.Argument(help="local@domain, a bare name, or @domain (catch-all).")
    ],
    targets: Annotated[list[str], typer.Argument(help="Accounts or aliases it delivers to.")],
) -> None:
    """Create an alias."""
    alias = _call("POST", "/aliases", json={"address": address, "targets": targets}).json()
    typer.echo(f"created {alias['address']} -> {', '.join(alias['targets'])}")


@alias_app.command("list")
def alias_list(
    as_json: Json = False,
    domain: Annotated[str | None, typer.Option("--domain", help="Only this domain's.")] = None,
) -> None:
    """List aliases and the accounts they reach."""
    params = {"domain": domain} if domain else {}
    data = _call("GET", "/aliases", params=params).json()
    if as_json:
        _print_json(data)
        return
    typer.echo(f"{'ALIAS':<40} TARGETS")
    for alias in data["aliases"]:
        typer.echo(f"{alias['address']:<40} {', '.join(alias['targets'])}")


@alias_app.command("del")
def alias_del(address: str) -> None:
    """Delete an alias."""
    _call("DELETE", f"/aliases/{_path(address)}")
    typer.echo(f"deleted {address}")


@mail_app.command("list")
def mail_list(
    username: str,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: Json = False,
) -> None:
    """List a user's messages, oldest first."""
    page = _call(
        "GET", f"/users/{_path(username)}/messages", params={"offset": offset, "limit": limit}
    ).json()
    if as_json:
        _print_json(page)
        return
    for m in page["messages"]:
        typer.echo(
            f"{m['id']}  {m['size']:>9}  {m['received']}  "
            f"{(m['from'] or '-')[:40]}  {(m['subject'] or '')[:60]}"
        )
    shown = len(page["messages"])
    typer.echo(f"{shown} of {page['total']} messages (offset {page['offset']})")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


@queue_app.command("list")
def queue_list(as_json: Json = False) -> None:
    """List the outbound queue, the oldest first."""
    data = _call("GET", "/queue").json()
    if as_json:
        _print_json(data)
        return
    typer.echo(f"{'ID':<24} {'SIZE':>9}  {'NEXT ATTEMPT (UTC)':<19}  {'SENDER':<30} PENDING")
    for e in data["entries"]:
        pending = [r["address"] for r in e["recipients"] if r["state"] == "pending"]
        typer.echo(
            f"{e['id']:<24} {e['size']:>9}  {_when(e['next_attempt']):<19}  "
            f"{(e['sender'] or '<>')[:30]:<30} {', '.join(pending)}"
        )
    typer.echo(f"{len(data['entries'])} entries")


@queue_app.command("show")
def queue_show(entry_id: str, as_json: Json = False) -> None:
    """Show one entry with each recipient's state, attempts and last reply."""
    e = _call("GET", f"/queue/{_path(entry_id)}").json()
    if as_json:
        _print_json(e)
        return
    typer.echo(f"id:           {e['id']}")
    typer.echo(f"sender:       {e['sender'] or '<>'}")
    typer.echo(f"account:      {e['account'] or '-'}")
    typer.echo(f"size:         {e['size']}")
    typer.echo(f"created:      {_when(e['created_at'])}")
    typer.echo(f"expires:      {_when(e['expires_at'])}")
    typer.echo(f"next attempt: {_when(e['next_attempt'])}")
    typer.echo(f"leased by:    {e['leased_by'] or '-'} until {_when(e['lease_expires'])}")
    for r in e["recipients"]:
        typer.echo(
            f"  {r['address']:<40} {r['state']:<9} attempts {r['attempts']:<3} "
            f"next {_when(r['next_attempt'])}  {r['last_reply'] or ''}"
        )


@queue_app.command("retry")
def queue_retry(entry_id: str) -> None:
    """Make an entry's pending recipients due now."""
    _call("POST", f"/queue/{_path(entry_id)}/retry")
    typer.echo(f"{entry_id} is due now")


@queue_app.command("drop")
def queue_drop(entry_id: str) -> None:
    """Remove an entry from the queue (no bounce is sent)."""
    _call("DELETE", f"/queue/{_path(entry_id)}")
    typer.echo(f"dropped {entry_id}")


@app.command("backup")
def backup_cmd(
    file: Annotated[str, typer.Argument(help="Where to write the tar; - for stdout.")],
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Read DATA_DIR (default /data) directly, not over the REST API: the same "
            "backup without HTTP, where the volume is (the mailstore's container).",
        ),
    ] = False,
) -> None:
    """Take an online backup (accounts, domains, aliases, every message) into FILE."""
    if file == "-":
        _widen_pipe(sys.stdout.fileno())
        with open(sys.stdout.fileno(), "wb", buffering=COPY_BUFFER, closefd=False) as out:
            _write_backup(out, local)
        return
    target = Path(file + ".partial")
    try:
        with target.open("wb", buffering=COPY_BUFFER) as out:
            _write_backup(out, local)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    target.rename(file)
    typer.echo(f"backup written to {file}", err=True)


def _widen_pipe(fd: int) -> None:
    """Give a pipe on ``fd`` a buffer of ``COPY_BUFFER`` (Linux; 64 KiB by default), so each
    1 MiB write is one system call and one wake-up of the reader, not sixteen; a file, a
    terminal or a refusal (a limit in /proc/sys/fs/pipe-max-size) leaves it as it is."""
    if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, COPY_BUFFER)


def _write_backup(out: BinaryIO, local: bool) -> None:
    """The backup's tar into ``out``: made here from DATA_DIR, or streamed from the server."""
    if local:
        data_dir = Path(os.environ.get("DATA_DIR", "/data"))
        if not (data_dir / DATABASE_FILE).is_file():
            _fail(f"no mailstore volume at {data_dir} (no {DATABASE_FILE}); set DATA_DIR")
        try:
            write_backup(data_dir, MailStore(data_dir / "mail", "localhost"), out)
        except (OSError, sqlite3.Error) as exc:
            _fail(f"the backup did not complete: {exc}")
        return
    try:
        with _client(timeout=None) as client, client.stream("GET", "/backup") as response:
            if response.is_error:
                response.read()
                _check(response)
            for chunk in response.iter_raw():
                out.write(chunk)
    except _httpx().HTTPError as exc:
        _fail(f"the backup did not complete: {exc or type(exc).__name__}")


def _open_input(file: str) -> BinaryIO:
    if file == "-":
        return sys.stdin.buffer
    try:
        return Path(file).open("rb")
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")


def _summary(done: restore.Summary) -> str:
    return (
        f"{done.maildirs} mailboxes, {done.messages} messages, {done.octets} octets "
        f"(taken {done.created_at})"
    )


@app.command("verify")
def verify_cmd(file: Annotated[str, typer.Argument(help="A backup; - for stdin.")]) -> None:
    """Check a backup without restoring it: checksums, manifest, database integrity."""
    from mailstore_api import restore  # noqa: PLC0415 (structlog and rich: 0.3 s of start-up)

    with _open_input(file) as stream:
        try:
            done = restore.verify(stream)
        except restore.BadBackup as exc:
            _fail(f"{file} is not a sound backup: {exc}")
    typer.echo(f"{file}: ok, {_summary(done)}")


@app.command("restore")
def restore_cmd(file: Annotated[str, typer.Argument(help="A backup; - for stdin.")]) -> None:
    """Restore a backup into an empty DATA_DIR (default /data), with the mailstore stopped."""
    from mailstore_api import restore  # noqa: PLC0415 (as in verify_cmd)

    data_dir = Path(os.environ.get("DATA_DIR", "/data"))
    os.umask(0o077)
    with _open_input(file) as stream:
        try:
            done = restore.restore(stream, data_dir)
        except restore.BadBackup as exc:
            _fail(f"{file} is not a sound backup, nothing restored: {exc}")
        except (restore.VolumeNotEmpty, VolumeBusy) as exc:
            _fail(str(exc))
    typer.echo(f"restored into {data_dir}: {_summary(done)}")


@app.command("import")
def import_cmd(
    address: Annotated[str, typer.Argument(help="The account to import into.")],
    path: Annotated[Path, typer.Argument(help="A Maildir (with new/ or cur/) or an mbox file.")],
    mbox_format: Annotated[
        str, typer.Option("--mbox-format", help="How the mbox quotes From lines: mboxrd or mboxo.")
    ] = "mboxrd",
) -> None:
    """Import a Maildir or an mbox file; each message once (a second run adds nothing)."""
    if mbox_format not in ("mboxrd", "mboxo"):
        _fail("--mbox-format is mboxrd or mboxo")
    fmt: mailsources.MboxFormat = "mboxrd" if mbox_format == "mboxrd" else "mboxo"
    try:
        source = mailsources.read_source(path, fmt)
    except ValueError as exc:
        _fail(str(exc))
    added = skipped = 0
    with _client(timeout=120.0) as client:
        for message in source:
            answer = _call(
                "POST",
                f"/users/{_path(address)}/import",
                client,
                params={"received": f"{message.received:.6f}"},
                content=message.data,
                headers={"Content-Type": "message/rfc822"},
            ).json()
            if answer["imported"]:
                added += 1
            else:
                skipped += 1
    typer.echo(f"imported {added} messages into {address}, {skipped} already there")


@app.command("export")
def export_cmd(
    address: Annotated[str, typer.Argument(help="The account to export.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The mbox file to append to; - for stdout.")
    ] = "-",
) -> None:
    """Write an account's messages as an mbox (mboxrd), oldest first."""
    with _client(timeout=120.0) as client:
        messages = _exported(client, address)
        if output != "-":
            count = mailsources.write_mbox(Path(output), messages)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                mbox = Path(scratch) / "export.mbox"
                count = mailsources.write_mbox(mbox, messages)
                with mbox.open("rb") as f:
                    shutil.copyfileobj(f, sys.stdout.buffer)
                sys.stdout.buffer.flush()
    typer.echo(f"exported {count} messages of {address}", err=True)


def _exported(client: httpx.Client, address: str) -> Iterator[mailsources.SourceMessage]:
    offset, user = 0, _path(address)
    while True:
        page = _call(
            "GET", f"/users/{user}/messages", client, params={"offset": offset, "limit": 500}
        ).json()
        for entry in page["messages"]:
            raw = _call("GET", f"/users/{user}/messages/{quote(entry['id'])}/raw", client)
            received = datetime.datetime.fromisoformat(entry["received"]).timestamp()
            yield mailsources.SourceMessage(raw.content, received)
        offset += len(page["messages"])
        if not page["messages"] or offset >= page["total"]:
            return


@token_app.command("show")
def token_show() -> None:
    """Print the admin token (configured, or generated by the mailstore)."""
    typer.echo(_admin_token())


@admin_app.command("passwd")
def admin_passwd(password_stdin: PasswordStdin = False) -> None:
    """Set the web console's admin password (signs out every console session)."""
    _call("PUT", "/console/password", json={"password": _password(password_stdin)})
    typer.echo("console admin password set")


if __name__ == "__main__":
    app()
