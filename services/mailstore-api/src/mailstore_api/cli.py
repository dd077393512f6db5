"""``mailctl``: the admin CLI, a thin client of the admin REST API.

Configuration: ``MAILSTORE_API_URL`` (default http://127.0.0.1:8080); the admin token from
``ADMIN_TOKEN``, else the file ``$SECRETS_DIR/admin_token`` (``SECRETS_DIR`` default /secrets).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

app = typer.Typer(help="Manage the mail drop's users and mailboxes.", no_args_is_help=True)
user_app = typer.Typer(help="Users: add, list, passwd, del.", no_args_is_help=True)
mail_app = typer.Typer(help="Mailboxes: list messages.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens: show the admin token.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(mail_app, name="mail")
app.add_typer(token_app, name="token")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


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


def _call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    url = _base_url()
    try:
        with httpx.Client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {_admin_token()}"},
            timeout=30.0,
        ) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the mailstore at {url}: {exc or type(exc).__name__}")
    if response.is_error:
        try:
            error = response.json()["error"]
            _fail(f"{error['message']} ({error['code']}, HTTP {response.status_code})")
        except (ValueError, KeyError, TypeError):
            _fail(f"HTTP {response.status_code}: {response.text[:200]}")
    return response


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


@user_app.command("add")
def user_add(username: str, password_stdin: PasswordStdin = False) -> None:
    """Create a user (prompts for the password twice unless --password-stdin)."""
    password = _password(password_stdin)
    _call("POST", "/users", json={"username": username, "password": password})
    typer.echo(f"created {username}")


@user_app.command("list")
def user_list() -> None:
    """List users with their message count and size."""
    users = _call("GET", "/users").json()["users"]
    typer.echo(f"{'USER':<32} {'MESSAGES':>8} {'BYTES':>12}  CREATED")
    for user in users:
        typer.echo(
            f"{user['username']:<32} {user['messages']:>8} {user['bytes']:>12}  "
            f"{user['created_at']}"
        )


@user_app.command("passwd")
def user_passwd(username: str, password_stdin: PasswordStdin = False) -> None:
    """Change a user's password."""
    password = _password(password_stdin)
    _call("PUT", f"/users/{username}/password", json={"password": password})
    typer.echo(f"password changed for {username}")


@user_app.command("del")
def user_del(
    username: str,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the user's mail.")] = False,
) -> None:
    """Delete a user (refused while mail remains, unless --purge)."""
    _call("DELETE", f"/users/{username}", params={"purge": "true" if purge else "false"})
    typer.echo(f"deleted {username}")


@mail_app.command("list")
def mail_list(
    username: str,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """List a user's messages, oldest first."""
    page = _call(
        "GET", f"/users/{username}/messages", params={"offset": offset, "limit": limit}
    ).json()
    for m in page["messages"]:
        typer.echo(
            f"{m['id']}  {m['size']:>9}  {m['received']}  "
            f"{(m['from'] or '-')[:40]}  {(m['subject'] or '')[:60]}"
        )
    shown = len(page["messages"])
    typer.echo(f"{shown} of {page['total']} messages (offset {page['offset']})")


@token_app.command("show")
def token_show() -> None:
    """Print the admin token (configured, or generated by the mailstore)."""
    typer.echo(_admin_token())


if __name__ == "__main__":
    app()
