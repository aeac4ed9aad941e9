"""Small helpers the services modules share (the facade and the single-player request path)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..errors import InvalidInput


def _local_date(as_of: datetime, tz: str) -> date:
    """The local date of ``as_of`` in the game's time zone."""
    return as_of.astimezone(ZoneInfo(tz)).date()


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidInput(f"{name} must be a non-empty string of at most 255 characters", field=name)


def _detection_rows(game_id, version, as_of_dt, res, dets, index=None) -> list[dict]:
    now = datetime.now(UTC)
    idx = range(len(dets)) if index is None else index
    rows = []
    for d, i in zip(dets, idx, strict=True):
        rows.append({
            "game_id": game_id, "player_id": d["player_id"], "taxonomy_version": version, "as_of": as_of_dt,
            "detected_at": now, "is_anomalous": bool(res.is_anomalous[i]),
            "overall_score": float(res.overall_score[i]), "surprise": float(res.surprise[i]),
            "confidence": float(res.confidence[i]), "context": res.context, "axes": d["axes"],
        })
    return rows
