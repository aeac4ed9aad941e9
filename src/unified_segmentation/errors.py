"""One typed error hierarchy for the whole product.

Library code raises these; the CLI turns them into exit codes and messages, the API into
``{"error": code, "detail": text}`` with ``status``.
"""

from __future__ import annotations

from typing import Any


class UsegError(Exception):
    """Base class: ``code`` is the stable machine-readable name, ``status`` the HTTP status."""

    code = "error"
    status = 400

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        body.update({k: v for k, v in self.extra.items() if v is not None})
        return body


class InvalidInput(UsegError):
    """Bad rows or parameters. ``errors`` lists ``{"row", "field", "message"}`` of the first problems."""

    code = "invalid_input"
    status = 422


class PayloadTooLarge(UsegError):
    code = "payload_too_large"
    status = 413


class GameNotFound(UsegError):
    code = "game_not_found"
    status = 404


class PlayerNotFound(UsegError):
    code = "player_not_found"
    status = 404


class NotFound(UsegError):
    code = "not_found"
    status = 404


class TaxonomyNotFound(UsegError):
    code = "taxonomy_not_found"
    status = 404


class NoTaxonomy(UsegError):
    """The game exists but has no calibrated taxonomy yet."""

    code = "no_taxonomy"
    status = 409


class NotEnoughData(UsegError):
    code = "not_enough_data"
    status = 409


class TimezoneLocked(UsegError):
    code = "timezone_locked"
    status = 409


class Unauthorized(UsegError):
    code = "unauthorized"
    status = 401


class Forbidden(UsegError):
    code = "forbidden"
    status = 403


class RateLimited(UsegError):
    code = "rate_limited"
    status = 429
