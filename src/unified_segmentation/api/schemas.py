"""Request models: the edge's validation. Unknown fields are refused (``extra="forbid"``), numbers must be
finite, identifiers are 1–255 printable characters.

Size limits that answer 413 rather than 422 (batches over ``USEG_MAX_BATCH_PLAYERS`` players or
``USEG_MAX_BATCH_EVENTS`` rows) are checked by the routes, as the limits are settings.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, get_type_hints

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model, model_validator

from unified_segmentation.adapter.rollout import RolloutConfig
from unified_segmentation.game_settings import GameSettings

ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_MAX_LENGTH = 255
EPOCH_2100 = 4_102_444_800  # 2100-01-01T00:00:00Z in seconds; larger epochs are milliseconds sent by mistake

GameId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN),
    Field(description="The game's identifier (1–255 printable characters)", examples=["test_game"]),
]
PlayerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN),
    Field(description="The player's identifier within the game (1–255 printable characters)",
          examples=["test_player"]),
]

GamePath = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="The game",
                               examples=["test_game"])]
PlayerPath = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="The player",
                                 examples=["test_player"])]
GameQuery = Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="The game",
                                 examples=["test_game"])]


def _parse_time(value: Any) -> Any:
    """ISO-8601 text (naive = the game's time zone) or epoch seconds; epoch milliseconds are refused."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, bool):
        raise ValueError("expected an ISO-8601 time or epoch seconds")
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None:
        return value
    if not math.isfinite(number):
        raise ValueError("expected an ISO-8601 time or epoch seconds, got a non-finite number")
    if number > EPOCH_2100:
        raise ValueError("a time after 2100 looks like milliseconds: send epoch seconds or ISO-8601")
    if number < 0:
        raise ValueError("epoch seconds must not be negative")
    return datetime.fromtimestamp(number, UTC)


Timestamp = Annotated[datetime, BeforeValidator(_parse_time)]
AsOf = Annotated[
    Timestamp | None,
    Field(description="Compute as of this time (ISO-8601, naive = the game's time zone, or epoch seconds); "
                      "default: the game's default_as_of, else now",
          examples=[None]),
]


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CalibrateRequest(ApiModel):
    game_id: GameId
    force_recalibration: bool = Field(False, description="Recalibrate even if the data has not changed since the "
                                                         "active version")
    as_of: AsOf = None


class CategorizeRequest(ApiModel):
    player_id: PlayerId
    game_id: GameId
    as_of: AsOf = None
    taxonomy_version: int | None = Field(None, ge=1, description="Pin a taxonomy version (default: the active one)")


class CategorizeBatchRequest(ApiModel):
    game_id: GameId
    player_ids: list[PlayerId] = Field(min_length=1, description="Up to 10,000 players (413 beyond)")
    as_of: AsOf = None
    compact: bool = Field(False, description="Primary segment per axis and the top-7 only")
    columnar: bool = Field(False, description="The compact answer as one array per field under `columns` "
                                              "(fastest for large batches)")
    persist: bool = Field(False, description="Also store the memberships")


class DetectRequest(ApiModel):
    player_id: PlayerId
    game_id: GameId
    as_of: AsOf = None


class DetectBatchRequest(ApiModel):
    game_id: GameId
    player_ids: list[PlayerId] = Field(min_length=1, description="Up to 10,000 players (413 beyond)")
    as_of: AsOf = None
    persist: bool = Field(False, description="Also store the detections")


class RollbackRequest(ApiModel):
    version: int | None = Field(None, ge=1, description="Version to activate (default: the one before the active)")


class ProfileRequest(ApiModel):
    player_id: PlayerId
    game_id: GameId
    force_unified: bool = False
    force_legacy: bool = False

    @model_validator(mode="after")
    def _one_force(self) -> ProfileRequest:
        if self.force_unified and self.force_legacy:
            raise ValueError("force_unified and force_legacy cannot both be true")
        return self


class ValidateRequest(ApiModel):
    sample: int = Field(500, ge=1, le=10_000, description="Players compared (at most 10,000)")


_EVENT_ROW_SCHEMA = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string", "description": "Idempotency key (default: derived from the content)"},
        "player_id": {"type": "string"},
        "event_type": {"type": "string", "examples": ["session", "purchase", "refund", "social"]},
        "timestamp": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                      "description": "ISO-8601 (naive = the game's time zone) or epoch seconds"},
        "value": {"type": ["number", "null"], "minimum": 0},
        "properties": {"type": ["object", "null"]},
    },
    "required": ["player_id", "event_type", "timestamp"],
}
Row = dict[str, Any]


class EventsRequest(ApiModel):
    game_id: GameId
    events: list[Row] = Field(description="Up to 50,000 events (413 beyond); one bad row rejects the request",
                              json_schema_extra={"items": _EVENT_ROW_SCHEMA})


class DailyRequest(ApiModel):
    game_id: GameId
    rows: list[Row] = Field(description="player_id, date, sessions, playtime_minutes, purchases, spend, "
                                        "social_events (optional night_playtime_minutes, social_sessions, "
                                        "numeric extras); one bad row rejects the request")


class OutcomesRequest(ApiModel):
    game_id: GameId
    rows: list[Row] = Field(description="player_id, ltv, churned (0/1), support_tickets; one bad row rejects the "
                                        "request")


def _settings_update_model() -> type[BaseModel]:
    """``PUT …/settings``: any subset of the game settings, typed as :class:`GameSettings` declares them."""
    hints = get_type_hints(GameSettings)
    fields: dict[str, Any] = {name: (hint, Field(None, validate_default=False)) for name, hint in hints.items()}
    return create_model("SettingsUpdate", __base__=ApiModel, **fields)


SettingsUpdate = _settings_update_model()
RolloutUpdate = RolloutConfig
