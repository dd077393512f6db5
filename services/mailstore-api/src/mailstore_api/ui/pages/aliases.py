"""Aliases: list, create, delete (through the REST API's own route functions)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from mailstore_api.api import addresses
from mailstore_api.ui.console import ConsoleDep, SessionDep, StateDep
from mailstore_api.ui.csrf import FormDep, text
from mailstore_api.ui.errors import model
from mailstore_api.ui.pages.common import done

router = APIRouter()


@router.get("/aliases")
async def aliases_page(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    state: StateDep,
    domain: Annotated[str | None, Query(max_length=253)] = None,
) -> Response:
    listed = await addresses.list_aliases(state, domain or None)
    return console.page(request, "aliases.html", session, aliases=listed.aliases)


@router.post("/aliases")
async def create_alias(
    request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    targets = [t for t in re.split(r"[\s,]+", text(form, "targets")) if t]
    body = model(addresses.NewAlias, address=text(form, "address"), targets=targets)
    alias = await addresses.create_alias(body, state)
    return done(request, session, "/aliases", f"Alias {alias.address} created.")


@router.post("/aliases/{address}/delete")
async def delete_alias(
    address: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    await addresses.delete_alias(address, state)
    return done(request, session, "/aliases", f"Alias {address} deleted.")
