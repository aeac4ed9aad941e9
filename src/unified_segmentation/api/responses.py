"""The one JSON response class of the service (orjson) and the ``render`` helper routes use.

Routes return ``render(obj)`` rather than a bare dict: FastAPI would otherwise walk the whole answer
with ``jsonable_encoder`` before serializing it, which costs more than the scoring for a batch of
10,000 profiles.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    """Fallback for types orjson does not know (sets, Decimals, Paths, polars scalars...)."""
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy / polars scalars
        return obj.item()
    return str(obj)


def dumps(content: Any) -> bytes:
    """JSON bytes: datetimes as ISO-8601, numpy arrays and scalars as numbers, NaN/inf as ``null``."""
    return orjson.dumps(content, default=_default, option=_OPTIONS)


class ORJSONResponse(JSONResponse):
    """``application/json`` rendered with orjson (FastAPI's own class of that name is deprecated)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def render(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> ORJSONResponse:
    """The answer of a route: ``content`` serialized once, straight to bytes."""
    return ORJSONResponse(content, status_code=status_code, headers=headers)
