"""Pieces shared by the routers: error documentation and the batch-size check."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel

from unified_segmentation.errors import InvalidInput, PayloadTooLarge


class ErrorBody(BaseModel):
    """Every error answer: a stable machine-readable ``error`` code and a human ``detail``."""

    error: str
    detail: str


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses."""
    text = {
        400: "Malformed JSON",
        401: "No or invalid API key",
        403: "Wrong scope, or a key restricted to other games",
        404: "Unknown game, player, taxonomy version or route",
        409: "No taxonomy yet, or a conflicting state",
        413: "Body or batch too large",
        422: "Invalid input (the field is named)",
        429: "Rate limit exceeded",
    }
    return {s: {"model": ErrorBody, "description": text.get(s, "Error")} for s in statuses}


AUTH_ERRORS = errors(401, 403, 422, 429)
SEGMENTATION = "/api/v1/segmentation"


def check_batch_size(count: int, limit: int, what: str) -> None:
    """413 when a batch holds more than ``limit`` items."""
    if count > limit:
        raise PayloadTooLarge(f"{count} {what} in one request; the limit is {limit}")


async def refuse_nul_characters(request: Request) -> None:
    """422 for a NUL character anywhere in the body: PostgreSQL can store it neither in text nor in JSON."""
    raw = await request.body()  # already read (and cached) by FastAPI
    if b"\\u0000" not in raw:
        return
    path = _nul_path(json.loads(raw), "")
    if path is not None:
        raise InvalidInput(f"{path or 'body'}: NUL characters (\\u0000) are not accepted", field=path or None)


def _nul_path(node: Any, path: str) -> str | None:
    if isinstance(node, str):
        return path if "\x00" in node else None
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return child
            found = _nul_path(value, child)
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _nul_path(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


NulFree = Annotated[None, Depends(refuse_nul_characters)]  # declared after the key: 401/403 come first
