"""Errors in the console are HTML pages with the status the REST API would give (a service
function's 409, 422 or 423 the same), never JSON or a stack trace."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mailstore_api.errors import ApiError, error_answer, http_error_response, validation_error
from mailstore_api.ui.console import SignInRequired, console_of, root, session_of
from mailstore_api.ui.csrf import CsrfRefused

M = TypeVar("M", bound=BaseModel)


def model(cls: type[M], **fields: object) -> M:
    """The REST API's request model from form fields: the same rules (422 when one is broken)."""
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc.errors(), ("form",)) from exc


def _error_page(request: Request, status: int, message: str) -> Response:
    return console_of(request).page(
        request,
        "error.html",
        session_of(request),
        status=status,
        status_code=status,
        message=message,
    )


async def _sign_in_first(request: Request, _: Exception) -> Response:
    if request.method in {"GET", "HEAD"}:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"{root(request)}/signin?next={target}", status_code=303)
    return _error_page(request, 403, "Sign in first.")


async def _csrf_refused(request: Request, _: Exception) -> Response:
    return _error_page(
        request, 403, "The form is stale or did not come from the console; reload it."
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    answer = http_error_response(exc)
    return _error_page(request, answer.status_code, str(exc.detail))


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return await _answer(request, validation_error(exc.errors()))


async def _answer(request: Request, exc: Exception) -> Response:
    status, body = error_answer(exc)
    return _error_page(request, status, str(body["error"]["message"]))


def install_error_pages(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ApiError, _answer)
    app.add_exception_handler(RedisError, _answer)
    app.add_exception_handler(Exception, _answer)
