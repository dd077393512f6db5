"""``/healthz`` (the process serves) and ``/readyz`` (database, volume and Redis usable).

Both fail (503) once the delivery thread has stopped (:mod:`mailstore_api.committer`): nothing can
be stored until a restart, and the container health check (``/healthz``) is what restarts it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from mailstore_api.errors import ErrorResponse, error_response
from mailstore_api.state import State, get_state

router = APIRouter(tags=["health"])
StateDep = Annotated[State, Depends(get_state)]


_STOPPED = "the delivery thread has stopped"


@router.get(
    "/healthz",
    response_model=None,
    responses={503: {"model": ErrorResponse, "description": "delivery_stopped"}},
)
async def healthz(state: StateDep) -> dict[str, str] | JSONResponse:
    """Alive: the process answers and its delivery thread runs."""
    if not state.committer.alive:
        return error_response(503, "delivery_stopped", _STOPPED)
    return {"status": "ok"}


async def _committer_alive(state: State) -> None:
    if not state.committer.alive:
        raise RuntimeError(_STOPPED)


def _volume_writable(data_dir: Path) -> None:
    probe = data_dir / f".readyz-{secrets.token_hex(6)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        probe.unlink()


async def _check(results: dict[str, str], name: str, coro: Any) -> None:
    try:
        with anyio.fail_after(3):
            await coro
        results[name] = "ok"
    except Exception as exc:
        results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]


@router.get(
    "/readyz",
    responses={503: {"model": ErrorResponse, "description": "not_ready: a check failed"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """Ready when the delivery thread runs, the database answers, the volume is writable and Redis
    answers PING."""
    results: dict[str, str] = {}
    await _check(results, "delivery", _committer_alive(state))
    await _check(results, "database", state.run_io(state.db.ping))
    await _check(results, "volume", state.run_io(_volume_writable, state.settings.data_dir))
    await _check(results, "redis", state.redis.ping())
    failed = [name for name, result in results.items() if result != "ok"]
    if failed:
        return error_response(503, "not_ready", f"failed: {', '.join(failed)}", checks=results)
    return JSONResponse({"status": "ready", "checks": results})
