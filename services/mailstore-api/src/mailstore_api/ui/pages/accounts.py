"""Accounts: list (usage, quota, messages, whether POP3 holds the lock), create, change the
quota or the password, delete (through the REST API's own route functions)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from mailstore_api.api import addresses, admin
from mailstore_api.ui.console import ConsoleDep, SessionDep, StateDep
from mailstore_api.ui.csrf import FormDep, checked, text
from mailstore_api.ui.errors import model
from mailstore_api.ui.pages.common import done, locked, optional_int

router = APIRouter()


@router.get("/accounts")
async def accounts_page(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    state: StateDep,
    domain: Annotated[str | None, Query(max_length=253)] = None,
) -> Response:
    users = (await admin.list_users(state, domain or None)).users
    return console.page(
        request,
        "accounts.html",
        session,
        users=users,
        locks=await locked(state, [u.username for u in users]),
        domains=(await addresses.list_domains(state)).domains,
        domain=domain or "",
    )


@router.post("/accounts")
async def create_account(
    request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    password = form.get("password")
    body = model(
        admin.NewUser,
        username=text(form, "username"),
        password=password if isinstance(password, str) else "",
        quota_bytes=optional_int(text(form, "quota_bytes")),
        quota_messages=optional_int(text(form, "quota_messages")),
    )
    user = await admin.create_user(body, state)
    return done(request, session, f"/accounts/{quote(user.username)}", f"{user.username} created.")


@router.get("/accounts/{username}")
async def account_page(
    username: str, request: Request, console: ConsoleDep, session: SessionDep, state: StateDep
) -> Response:
    user = await admin.get_user(username, state)
    lock = (await locked(state, [user.username]))[user.username]
    return console.page(request, "account.html", session, user=user, locked=lock)


@router.post("/accounts/{username}/quota")
async def change_quota(
    username: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    body = model(
        admin.QuotaChange,
        quota_bytes=optional_int(text(form, "quota_bytes")),
        quota_messages=optional_int(text(form, "quota_messages")),
    )
    user = await admin.change_user(username, body, state)
    return done(request, session, f"/accounts/{quote(user.username)}", "Quota changed.")


@router.post("/accounts/{username}/password")
async def change_password(
    username: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    password = form.get("password")
    body = model(admin.NewPassword, password=password if isinstance(password, str) else "")
    await admin.set_password(username, body, state)
    return done(request, session, f"/accounts/{quote(username)}", "Password changed.")


@router.post("/accounts/{username}/delete")
async def delete_account(
    username: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    await admin.delete_user(username, state, purge=checked(form, "purge"))
    return done(request, session, "/accounts", f"{username} deleted.")
