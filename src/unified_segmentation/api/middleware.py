"""Pure ASGI middleware: request context (id, access log, latency metrics, last-resort 500) and body limit.

Pure ASGI rather than ``BaseHTTPMiddleware`` so that nothing buffers bodies or adds a task per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body, internal_error_response
from .logs import ACCESS_LOGGER
from .metrics import UNMATCHED_ROUTE, ApiMetrics
from .responses import dumps

access_log = logging.getLogger(ACCESS_LOGGER)
error_log = logging.getLogger("unified_segmentation.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label cardinality), or ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Outermost layer: request id in and out, one access-log line and one histogram sample per request.

    An exception that escapes the application is logged with its traceback under the request id and
    answered ``500 {"error": "internal_error", "detail": "internal error; request id ..."}``.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False
        rid_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - the one place that turns a bug into a clean 500
            error_log.exception("unhandled error", extra={"request_id": request_id,
                                                          "route": route_template(scope)})
            if not started:
                response = internal_error_response(request_id)
                await response(scope, receive, send)
                status = 500
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            method = scope.get("method", "")
            if self.metrics is not None:
                self.metrics.observe_request(route, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={"request_id": request_id, "method": method, "route": route,
                                                  "status": status, "duration_ms": round(seconds * 1000, 3)})


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once the streamed body passes the limit.

    An ``HTTPException`` so that FastAPI's body reader re-raises it unchanged and the error handlers
    render it as ``413 payload_too_large``.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (USEG_MAX_BODY_BYTES)")


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_body_bytes``: at once from ``Content-Length``, else while they stream."""

    def __init__(self, app: ASGIApp, max_body_bytes: int | None) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit is None:
            await self.app(scope, receive, send)
            return
        limit = self.limit
        declared = _content_length(scope)
        if declared == -1:
            await _send_error(send, 400, "bad_request", "invalid Content-Length header")
            return
        if declared is not None and declared > limit:
            await _send_error(send, 413, "payload_too_large", BodyTooLarge(limit).detail)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_error(send, 413, "payload_too_large", str(exc.detail))


def _content_length(scope: Scope) -> int | None:
    """The declared length, ``None`` when absent, ``-1`` when unreadable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


async def _send_error(send: Send, status: int, code: str, detail: str, **extra: Any) -> None:
    body = dumps(error_body(code, detail, **extra))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
