"""Every endpoint refuses a missing or wrong token, found by walking the published OpenAPI.

Admin endpoints (``/api/v1``): no token, a wrong token, a malformed header, the admin token with a
character changed or appended, and the SERVICE token all get 401, never 2xx. Internal endpoints
(``/internal/v1``): no token, a wrong token and the ADMIN token all get 401. The refusal comes
before anything else is looked at (401, not 404 or 422), so it says nothing about what exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def openapi(stack: Any) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


@pytest.fixture(scope="module")
def service_token(stack: Any) -> str:
    return str(stack.service_token)


@pytest.fixture(scope="module")
def victim(stack: Any, seed_mailbox: Callable[..., list[str]]) -> tuple[str, str]:
    """A real user with a real message, so that a leaked 2xx would have something to leak."""
    name = "tokenvictim"
    accounts = {name: "victim-password-123"}
    [delivered] = seed_mailbox(stack, accounts, b"Subject: secret\n\nsecret body\n", exist_ok=True)
    return name, delivered


def operations(spec: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    found = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith(prefix)
        for method in METHODS
        if method in item
    ]
    return sorted(found)


def call(
    client: httpx.Client, method: str, path: str, victim: tuple[str, str], headers: dict[str, str]
) -> httpx.Response:
    user, message_id = victim
    url = path.replace("{username}", user).replace("{message_id}", message_id)
    url = re.sub(r"\{[^}]+\}", "x", url)
    body: dict[str, Any] = {
        "username": user,
        "password": "a-new-password-1234",
        "secret": "apop-secret-12345",
        "ids": [message_id],
        "lock_token": "t",
        "fence": 1,
        "timestamp": "<1.2@x>",
        "digest": "0" * 32,
    }
    params = {"recipient": user, "purge": "true"}
    if method in ("POST", "PUT", "PATCH"):
        return client.request(method, url, json=body, params=params, headers=headers)
    return client.request(method, url, params=params, headers=headers)


def bad_headers(stack: Any, service_token: str, audience: str) -> dict[str, dict[str, str]]:
    right = stack.admin_token if audience == "admin" else service_token
    other = service_token if audience == "admin" else stack.admin_token
    flipped = right[:-1] + ("A" if right[-1] != "A" else "B")
    return {
        "none": {},
        "wrong": {"Authorization": "Bearer " + "w" * 43},
        "empty-bearer": {"Authorization": "Bearer"},
        "basic": {"Authorization": f"Basic {right}"},
        "token-alone": {"Authorization": right},
        "flipped": {"Authorization": f"Bearer {flipped}"},
        "appended": {"Authorization": f"Bearer {right}x"},
        "prefix": {"Authorization": f"Bearer {right[:-1]}"},
        "other-audience": {"Authorization": f"Bearer {other}"},
        "query-token": {},  # the token as a query parameter instead of a header
    }


@pytest.mark.parametrize("audience", ["admin", "internal"])
def test_every_endpoint_refuses_missing_or_wrong_tokens(
    stack: Any,
    openapi: dict[str, Any],
    service_token: str,
    victim: tuple[str, str],
    audience: str,
) -> None:
    prefix = "/api/v1/" if audience == "admin" else "/internal/v1/"
    ops = operations(openapi, prefix)
    # What the design brief and docs/architecture.md name, at least.
    assert len(ops) >= (10 if audience == "admin" else 7), ops
    problems: list[str] = []
    client = httpx.Client(base_url=stack.api_url, timeout=30)
    for method, path in ops:
        for label, headers in bad_headers(stack, service_token, audience).items():
            if label == "query-token":
                right = stack.admin_token if audience == "admin" else service_token
                url_path = (
                    path + ("&" if "?" in path else "?") + f"token={right}&access_token={right}"
                )
                response = call(client, method, url_path, victim, headers)
            else:
                response = call(client, method, path, victim, headers)
            if response.status_code != 401:
                problems.append(
                    f"{method} {path} [{label}] -> {response.status_code} {response.text[:200]}"
                )
            elif b"secret body" in response.content:
                problems.append(f"{method} {path} [{label}] leaked the message")
    client.close()
    assert not problems, "\n".join(problems)
    # The victim and the message are intact: no refused call did anything.
    user, message_id = victim
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        raw = api.get(
            f"/api/v1/users/{user}/messages/{message_id}/raw",
            headers={"Authorization": f"Bearer {stack.admin_token}"},
        )
    assert raw.status_code == 200 and b"secret body" in raw.content


def test_the_right_token_is_accepted(stack: Any, service_token: str) -> None:
    """The control: the same calls with the right token are not refused."""
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        admin = api.get("/api/v1/users", headers={"Authorization": f"Bearer {stack.admin_token}"})
        assert admin.status_code == 200
        internal = api.get(
            "/internal/v1/recipients/nobody-at-all",
            headers={"Authorization": f"Bearer {service_token}"},
        )
        assert internal.status_code == 404  # past the token check: an unknown user


def test_unauthorized_answers_do_not_reveal_what_exists(
    stack: Any, victim: tuple[str, str]
) -> None:
    user, message_id = victim
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        real = api.get(f"/api/v1/users/{user}/messages/{message_id}")
        fake = api.get("/api/v1/users/nobody-at-all/messages/1.2.x,S=1,W=2")
    assert real.status_code == fake.status_code == 401
    assert real.json() == fake.json()
