"""The two hottest routes, ``POST /categorize`` and ``POST /anomalies/detect``, served without FastAPI's
routing, dependency resolution and exception middleware.

Those layers cost more CPU per call than reading and scoring a player inside a micro-batch, so
:class:`HotRoutes` (an ASGI layer just inside the request context: request id, access log and latency
metrics apply as to every route) answers a well-formed call itself: it reads the body, parses it
with ``orjson`` and validates it with the route's own model, checks the key as the route does,
runs the call through the batcher and renders the answer with the service's JSON renderer and error
handlers. Anything else goes down the normal path, byte for byte as it arrives: another method, a
query string, a body that is not ``application/json`` or larger than :data:`MAX_HOT_BODY` (or than
``USEG_MAX_BODY_BYTES``, so the normal path's 413 applies), a CORS
request (``Origin`` with CORS configured), a body that does not parse or validate (so 400 / 422 answers
come from the one validation handler). The FastAPI routes stay: they document the API (OpenAPI) and
serve every call the layer passes on, with the same :func:`serve_categorize` / :func:`serve_detect`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unified_segmentation.errors import UsegError

from .auth import authorize_with, presented_key_in
from .errors import database_error_handler, useg_error_handler
from .responses import render
from .schemas import CategorizeRequest, DetectRequest

CATEGORIZE_PATH = "/api/v1/segmentation/categorize"
DETECT_PATH = "/api/v1/segmentation/anomalies/detect"
#: Larger bodies go down the normal path (a well-formed call is ~100 bytes; the body limit applies there).
MAX_HOT_BODY = 16 * 1024


async def serve_categorize(state: Any, key: str | None, body: CategorizeRequest) -> dict:
    """One categorize call: read scope for the game, then the batcher; the answer as a dict."""
    await authorize_with(state.auth, "read", key, body.game_id)
    profile = await state.batcher.categorize(body.game_id, body.player_id, as_of=body.as_of,
                                             taxonomy_version=body.taxonomy_version)
    state.metrics.record_profiles(body.game_id, [profile])
    return profile


async def serve_detect(state: Any, key: str | None, body: DetectRequest) -> dict:
    """One detect call, as :func:`serve_categorize`."""
    await authorize_with(state.auth, "read", key, body.game_id)
    detection = await state.batcher.detect(body.game_id, body.player_id, as_of=body.as_of)
    state.metrics.record_detections(body.game_id, [detection])
    return detection


_Serve = Callable[[Any, str | None, Any], Awaitable[dict]]


class HotRoutes:
    """ASGI layer serving the well-formed calls of the hot routes (see the module's text)."""

    def __init__(self, app: ASGIApp, api: FastAPI, cors: bool = False, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.api = api
        self.cors = cors
        self.max_body = MAX_HOT_BODY if max_body_bytes is None else min(MAX_HOT_BODY, max_body_bytes)
        from .routes.scoring import router  # the routes document and back these paths

        routes = {r.path: r for r in router.routes if isinstance(r, APIRoute)}
        self.hot: dict[str, tuple[type[BaseModel], APIRoute, _Serve]] = {
            CATEGORIZE_PATH: (CategorizeRequest, routes[CATEGORIZE_PATH], serve_categorize),
            DETECT_PATH: (DetectRequest, routes[DETECT_PATH], serve_detect),
        }
        self.served = 0  # calls answered here (the rest went down the normal path)
        api.state.hot_routes = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot.get(scope.get("path", "")) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        length = headers.get("content-length")
        if (not (content_type == "application/json" or content_type.startswith("application/json;"))
                or (self.cors and "origin" in headers)
                or length is None or not (length.isascii() and length.isdigit()) or int(length) > self.max_body):
            await self.app(scope, receive, send)
            return
        body, cut = await _read_body(receive)
        model, route, serve = hot
        parsed = _parse(model, body) if cut is None else None
        if parsed is None:  # the normal path answers (and its validation handler words the error)
            await self.app(scope, _replay(body, cut, receive), send)
            return
        scope["route"] = route  # the route's template labels the access log and the latency histogram
        self.served += 1
        try:
            response = render(await serve(self.api.state, presented_key_in(headers), parsed))
        except UsegError as exc:
            response = await useg_error_handler(None, exc)  # type: ignore[arg-type]
        except (DBAPIError, PoolTimeoutError) as exc:
            response = await database_error_handler(Request(scope), exc)
        await response(scope, receive, send)


def _parse(model: type[BaseModel], body: bytes) -> BaseModel | None:
    """The body as the route's model (as FastAPI validates a JSON object body), or ``None``."""
    try:
        data = orjson.loads(body)
        if not isinstance(data, dict):
            return None
        return model.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError):
        return None


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """``(body, None)``: the whole body (its declared length was checked); ``(part, message)`` when the
    client went away first (``message``: the disconnect, to be passed on)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, cut: Message | None, receive: Receive) -> Receive:
    """A ``receive`` giving the already-read ``body`` (and the disconnect that cut it), then ``receive``'s."""
    queue: list[Message] = [{"type": "http.request", "body": body, "more_body": cut is not None}]
    if cut is not None:
        queue.append(cut)

    async def replay() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replay
