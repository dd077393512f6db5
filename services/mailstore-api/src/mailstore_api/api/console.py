"""Admin REST API under ``/api/v1`` (admin token): the web console's admin password."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from mailstore_api.errors import documented
from mailstore_api.state import State, get_state
from mailstore_api.ui.admin_password import set_admin_password
from mailstore_api.ui.console import Console

_bearer = HTTPBearer(auto_error=False, scheme_name="admin token")
router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(_bearer)])
StateDep = Annotated[State, Depends(get_state)]


class ConsolePassword(BaseModel):
    password: str = Field(max_length=4096)


@router.put("/console/password", status_code=204, responses=documented())
async def set_console_password(
    body: ConsolePassword, request: Request, state: StateDep
) -> Response:
    """Set the web console's admin password (``mailctl admin passwd``); every console session
    is signed out."""
    await set_admin_password(state, body.password)
    cast(Console, request.app.state.console).sessions.close_all()
    return Response(status_code=204)
