"""One JSON error shape for every error: ``{"error": {"code", "message", ...extra}}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mailcommon.logging import get_logger
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "message_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    423: "locked",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    """``code`` (snake_case) and ``message``, plus fields that depend on the code."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


_DESCRIPTIONS = {
    404: "unknown_user / unknown_message (or no such route)",
    409: "conflict (see the error code)",
    413: "message_too_large",
    422: "validation_error, or a rule broken (see the error code)",
    423: "mailbox_locked: a POP3 session holds the maildrop lock",
    503: "redis_unavailable",
    507: "insufficient_storage",
}


def documented(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error ``codes``, all with the one error shape."""
    return {
        code: {
            "model": ErrorResponse,
            "description": descriptions.get(f"e{code}", _DESCRIPTIONS.get(code, "error")),
        }
        for code in (*codes, 422)
    }


class ApiError(Exception):
    """An error answer: HTTP ``status``, a snake_case ``code``, a message and extra fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A JSONResponse carrying an error."""
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


UNAUTHORIZED = error_body("unauthorized", "missing or invalid bearer token")


def unauthorized() -> JSONResponse:
    """401 with no detail beyond the fact."""
    return JSONResponse(UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and body for an exception a route raised (logged as it deserves).

    ``ApiError`` as it says, a client gone mid-body 400 ``client_disconnected``, a Redis error
    503 ``redis_unavailable``, anything else 500 ``internal_error``. The admin API's handlers
    and the internal router (:mod:`mailstore_api.api.internal`) both answer with this.
    """
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.code, exc.message, **exc.extra)
    if isinstance(exc, ClientDisconnect):
        return 400, error_body("client_disconnected", "the client went away")
    if isinstance(exc, RedisError):
        log.warning("redis unavailable", error=f"{type(exc).__name__}: {exc}")
        return 503, error_body("redis_unavailable", "the lock service (Redis) is unreachable")
    log.error("unhandled error", exc_info=exc)
    return 500, error_body("internal_error", "internal error")


async def _answer(_: Request, exc: Exception) -> JSONResponse:
    status, body = error_answer(exc)
    return JSONResponse(body, status_code=status)


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (no such route, another method) in the one shape."""
    if (
        exc.status_code == 400
    ):  # FastAPI: a body it could not even decode; invalid input all the same
        return error_response(422, "validation_error", "the request body is not valid JSON")
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return http_error_response(exc)


def _clean(error: Any) -> dict[str, Any]:
    """A validation error without the offending input (may be bytes, or a password)."""
    return {
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


def validation_error(errors: Sequence[Any], where: tuple[str, ...] = ()) -> ApiError:
    """422 ``validation_error`` for pydantic's ``errors``, their locations under ``where``
    (``("body",)``), the first one in the message; never the input (it may be a password)."""
    details = [_clean({**e, "loc": (*where, *e.get("loc", ()))}) for e in errors]
    first = details[0] if details else {"loc": list(where), "msg": "invalid request"}
    place = ".".join(str(p) for p in first["loc"])
    what = str(first["msg"])
    return ApiError(422, "validation_error", f"{place}: {what}" if place else what, details=details)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _answer(request, validation_error(exc.errors()))


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, including FastAPI's own, use the one JSON shape."""
    app.add_exception_handler(ApiError, _answer)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RedisError, _answer)
    app.add_exception_handler(Exception, _answer)
