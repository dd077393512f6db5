"""Domains: list, add, remove (through the REST API's own route functions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from mailstore_api.api import addresses
from mailstore_api.ui.console import ConsoleDep, SessionDep, StateDep, root
from mailstore_api.ui.csrf import FormDep, checked, text
from mailstore_api.ui.errors import model
from mailstore_api.ui.pages.common import done

router = APIRouter()


@router.get("/")
async def home(request: Request, _: SessionDep) -> Response:
    return RedirectResponse(root(request) + "/domains", status_code=303)


@router.get("/domains")
async def domains_page(
    request: Request, console: ConsoleDep, session: SessionDep, state: StateDep
) -> Response:
    listed = await addresses.list_domains(state)
    return console.page(request, "domains.html", session, domains=listed.domains)


@router.post("/domains")
async def add_domain(
    request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    added = await addresses.add_domain(model(addresses.NewDomain, name=text(form, "name")), state)
    return done(request, session, "/domains", f"Domain {added.name} added.")


@router.post("/domains/{name}/delete")
async def delete_domain(
    name: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    await addresses.delete_domain(name, state, force=checked(form, "force"))
    return done(request, session, "/domains", f"Domain {name} deleted.")
