"""CSRF protection: every change is a POST that carries the session's token, in the form field
``csrf`` or the header ``X-CSRF-Token``, compared in constant time. (The cookie is
``SameSite=Strict`` as well: two defences, each enough alone.)"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from mailstore_api.ui.console import SessionDep
from mailstore_api.ui.sessions import Session

#: Form fields the console sends are short; a form is read whole, so it is bounded.
MAX_FIELDS = 50
MAX_FIELD_LENGTH = 64 * 1024


class CsrfRefused(Exception):
    """A change without the session's CSRF token: 403."""


def token_ok(session: Session, given: str) -> bool:
    return hmac.compare_digest(given.encode(), session.csrf.encode())


async def checked_form(request: Request, session: SessionDep) -> FormData:
    """Dependency of every change: the posted form, once its CSRF token matched the session's."""
    form = await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_LENGTH)
    given = request.headers.get("x-csrf-token") or form.get("csrf")
    if not isinstance(given, str) or not token_ok(session, given):
        raise CsrfRefused
    return form


def text(form: FormData, name: str) -> str:
    """A text field of the form ('' when absent)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def checked(form: FormData, name: str) -> bool:
    """Whether a checkbox was ticked."""
    return form.get(name) is not None


FormDep = Annotated[FormData, Depends(checked_form)]
