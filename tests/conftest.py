"""Integration tests against a running stack.

By default the stack is launched here as local processes (``mailstack.stack.Stack``: a throwaway
redis-server and the three services on free loopback ports, a temporary data directory). With
``STACK=compose`` the same tests run against ``docker compose up --build --wait`` on free ports,
torn down with ``down -v`` afterwards.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailstack.compose import ComposeStack
from mailstack.stack import Stack

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``swarm`` run last: leaving the swarm they made breaks Docker's embedded DNS
    for the containers already running (seen on Docker 20.10: a compose stack's services no
    longer resolve each other's names), so no compose test may come after them."""
    items.sort(key=lambda item: item.get_closest_marker("swarm") is not None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    mode = os.environ.get("STACK", "local")
    if mode == "compose":
        with ComposeStack(REPO) as compose:
            yield compose
    elif mode == "local":
        workdir = tmp_path_factory.mktemp("stack")
        with Stack(workdir, env={"POP3_ALLOW_PLAINTEXT_AUTH": "true"}) as local:
            yield local
    else:
        raise pytest.UsageError(f"STACK must be 'local' or 'compose', not {mode!r}")


@pytest.fixture(scope="module")  # module: a module that runs a stack of its own gets its client
def admin(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def make_user(admin: httpx.Client) -> Callable[..., tuple[str, str]]:
    """Create a fresh user (unique name unless given; ``fields``: more of the request, e.g.
    ``quota_bytes``); returns (username, password)."""

    def make(
        name: str | None = None, password: str | None = None, **fields: Any
    ) -> tuple[str, str]:
        username = name or f"u{secrets.token_hex(5)}"
        pw = password or secrets.token_urlsafe(12)
        response = admin.post("/users", json={"username": username, "password": pw, **fields})
        assert response.status_code == 201, response.text
        return username, pw

    return make


@pytest.fixture(scope="session")
def seed_mailbox() -> Callable[..., list[str]]:
    """Create accounts (name -> password) on a stack over the admin API, then deliver each of
    ``bodies`` to all of them over the internal API, as smtp-in does; the deliveries' ids."""

    def seed(
        stack: Any,
        accounts: dict[str, str],
        *bodies: bytes,
        exist_ok: bool = False,
        timeout: float = 30,
    ) -> list[str]:
        created_codes = (201, 409) if exist_ok else (201,)
        with httpx.Client(base_url=stack.api_url, timeout=timeout) as api:
            for name, password in accounts.items():
                created = api.post(
                    "/api/v1/users",
                    json={"username": name, "password": password},
                    headers={"Authorization": f"Bearer {stack.admin_token}"},
                )
                assert created.status_code in created_codes, created.text
            ids = []
            for body in bodies:
                delivered = api.post(
                    "/internal/v1/deliveries",
                    params=[("recipient", name) for name in accounts],
                    content=body,
                    headers={"Authorization": f"Bearer {stack.service_token}"},
                )
                assert delivered.status_code == 201, delivered.text
                ids.append(str(delivered.json()["id"]))
            return ids

    return seed


@pytest.fixture(scope="module")  # module: as admin
def tls_context(stack: Any) -> ssl.SSLContext:
    """Trusts the stack's generated certificate (its name is the mail host name, not 127.0.0.1)."""
    ctx = ssl.create_default_context(cadata=stack.read_secret("tls/cert.pem").decode())
    ctx.check_hostname = False
    return ctx


@pytest.fixture
def mailbox(admin: httpx.Client) -> Callable[[str], list[dict[str, Any]]]:
    """The messages the admin API lists for a user, oldest first."""

    def listing(username: str) -> list[dict[str, Any]]:
        response = admin.get(f"/users/{username}/messages", params={"limit": 500})
        assert response.status_code == 200, response.text
        body = response.json()
        items: list[dict[str, Any]] = body["messages"]
        return items

    return listing
