"""Failure under load for the replica tests: jobs on a few threads, one kill part-way through."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx


def add_account(
    api_url: str, admin_token: str, name: str = "", password: str = ""
) -> tuple[str, str]:
    """An account over the admin API (a fresh name and password unless given): (its name, its
    password)."""
    name, password = name or f"r{secrets.token_hex(5)}", password or secrets.token_urlsafe(12)
    response = httpx.post(
        f"{api_url}/api/v1/users",
        json={"username": name, "password": password},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return name, password


def under_load(
    count: int,
    job: Callable[[int], object],
    kill: Callable[[], object],
    *,
    kill_after: int,
    workers: int,
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> tuple[list[int], list[tuple[int, str]]]:
    """``job(i)`` for ``i`` in ``range(count)`` on ``workers`` threads, and ``kill()`` once, when
    ``kill_after`` jobs have succeeded. Returns (the jobs that succeeded, those that raised one
    of ``errors``, with the error)."""
    done: list[int] = []
    failed: list[tuple[int, str]] = []
    lock = threading.Lock()
    killed = threading.Event()

    def run(i: int) -> None:
        try:
            job(i)
        except errors as exc:
            with lock:
                failed.append((i, repr(exc)))
            return
        with lock:
            done.append(i)
            due = len(done) >= kill_after and not killed.is_set()
            if due:
                killed.set()
        if due:
            kill()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, range(count)))
    assert killed.is_set(), f"only {len(done)} jobs succeeded: {failed[:3]}"
    return done, failed
