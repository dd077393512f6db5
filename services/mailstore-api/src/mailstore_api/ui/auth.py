"""Sign-in and sign-out pages. A sign-in is throttled like a POP3 login (failures per client
address, and for the one name ``admin`` from everywhere, with the networks the admin signed in
from held to their own limit: :class:`mailcommon.throttle.AuthThrottle`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from mailcommon.logging import get_logger
from mailcommon.throttle import Outcome
from starlette.responses import Response

from mailstore_api.passwords import MAX_PASSWORD_LENGTH
from mailstore_api.ui.admin_password import is_admin
from mailstore_api.ui.console import (
    COOKIE,
    COOKIE_PATH,
    ConsoleDep,
    StateDep,
    root,
    session_of,
)
from mailstore_api.ui.csrf import FormDep

log = get_logger(__name__)
router = APIRouter()
#: The throttle's name for every sign-in (there is one admin).
ADMIN = "admin"


def _next_page(request: Request, given: str) -> str:
    """Where to go after signing in: a console page, never another site."""
    prefix = root(request)
    if given.startswith(prefix + "/") and not given.startswith("//") and "\\" not in given:
        return given
    return prefix + "/"


@router.get("/signin")
async def signin_page(request: Request, console: ConsoleDep, next: str = "") -> Response:
    if session_of(request) is not None:
        return RedirectResponse(_next_page(request, next), status_code=303)
    return console.page(request, "signin.html", None, next=next)


@router.post("/signin")
async def signin(
    request: Request,
    console: ConsoleDep,
    state: StateDep,
    password: Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    ip = request.client.host if request.client else "unknown"
    throttle = console.throttle(state)
    attempt = await throttle.admit(ip, ADMIN)
    if attempt is None:
        log.warning("console sign-in refused", reason="throttled", client=ip)
        return console.page(
            request,
            "signin.html",
            None,
            status=429,
            next=next,
            error="Too many failed sign-ins; try again later.",
        )
    try:
        right = bool(password) and await is_admin(state, password)
    except BaseException:
        await throttle.resolve(attempt, Outcome.UNCHECKED)
        raise
    await throttle.resolve(attempt, Outcome.RIGHT if right else Outcome.FAILED)
    if not right:
        log.warning("console sign-in refused", reason="bad_credentials", client=ip)
        return console.page(
            request, "signin.html", None, status=401, next=next, error="Wrong password."
        )
    session_id, _ = console.sessions.open()
    log.info("console signed in", client=ip)
    response = RedirectResponse(_next_page(request, next), status_code=303)
    console.set_cookie(request, response, session_id)
    return response


@router.post("/signout")
async def signout(request: Request, console: ConsoleDep, _: FormDep) -> Response:
    console.sessions.close(request.cookies.get(COOKIE))
    response = RedirectResponse(root(request) + "/signin", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response
