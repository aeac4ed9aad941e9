"""Every error the service answers, rendered one way: ``{"error": code, "detail": text}``.

* :class:`~unified_segmentation.errors.UsegError` (the domain hierarchy) → its own ``status``;
* request validation → 422 ``invalid_input`` naming the field (``events[3].value: ...``), or 400
  ``malformed_json`` when the body is not JSON at all;
* Starlette's HTTP errors (unknown route 404, wrong method 405, ...) → the same shape;
* the database unreachable (connection refused or lost, pool exhausted) → 503 ``database_unavailable``
  with ``Retry-After``;
* anything else → 500 ``internal_error`` with the request id, never a stack trace (the trace goes to
  the log, under the same request id; see :mod:`.middleware`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from unified_segmentation.errors import RateLimited, Unauthorized, UsegError

from .responses import ORJSONResponse, render

log = logging.getLogger("unified_segmentation.api")

MAX_LISTED_ERRORS = 20

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def internal_error_response(request_id: str | None) -> ORJSONResponse:
    """The 500 answer: a request id to quote to the operators, nothing about the code."""
    rid = request_id or "unknown"
    return render(error_body("internal_error", f"internal error; request id {rid}"), 500,
                  headers={"X-Request-ID": rid})


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "events", 3, "value")`` → ``events[3].value``; ``("query", "limit")`` → ``limit``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    elif parts and parts[0] in ("header", "cookie"):
        parts = [f"{parts[0]} {parts[1]}", *parts[2:]] if len(parts) > 1 else parts
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    if kind == "missing" and loc == ("body",):
        return "a JSON request body is required"
    if kind in ("model_attributes_type", "dict_type") and loc == ("body",) and isinstance(err.get("input"), bytes):
        return "the body must be a JSON object sent with 'Content-Type: application/json'"
    return str(err.get("msg", "invalid value"))


async def useg_error_handler(request: Request, exc: UsegError) -> ORJSONResponse:
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.extra.get("retry_after", 60))}
    return render(exc.to_dict(), exc.status, headers=headers)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> ORJSONResponse:
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            pos = err.get("loc", ("body", 0))[-1]
            reason = ctx.get("error", "JSON decode error")
            return render(error_body("malformed_json", f"the body is not valid JSON (character {pos}: {reason})"),
                          400)
    listed = [{"field": field_path(e.get("loc", ())), "message": _message(e)} for e in errors[:MAX_LISTED_ERRORS]]
    first = listed[0] if listed else {"field": "body", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return render(error_body("invalid_input", detail, errors=listed), 422)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return render(error_body(code, detail), exc.status_code, headers=getattr(exc, "headers", None))


def _database_unreachable(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


async def database_error_handler(request: Request, exc: Exception) -> ORJSONResponse:
    request_id = getattr(request.state, "request_id", None)
    if _database_unreachable(exc):
        log.warning("database unavailable: %s", type(exc).__name__, extra={"request_id": request_id})
        return render(error_body("database_unavailable", "the database is unreachable; retry shortly"), 503,
                      headers={"Retry-After": "1"})
    log.error("database error", exc_info=exc, extra={"request_id": request_id})
    return internal_error_response(request_id)


async def unhandled_error_handler(request: Request, exc: Exception) -> ORJSONResponse:
    """Last resort (the request-context middleware normally answers first, with the same body)."""
    request_id = getattr(request.state, "request_id", None)
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
    return internal_error_response(request_id)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(UsegError, useg_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(PoolTimeoutError, database_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
