"""Anomaly detections: bulk insertion and listings sorted by surprise with cursor pagination."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ...errors import InvalidInput
from .. import _bulk
from ..db import json_dumps
from ..models import AnomalyDetection, utcnow

__all__ = [
    "AnomalyPage",
    "decode_cursor",
    "encode_cursor",
    "insert_detections",
    "list_anomalies",
    "list_player_detections",
]

_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.String(),
    "taxonomy_version": pl.Int64(),
    "as_of": pl.Datetime("us", "UTC"),
    "detected_at": pl.Datetime("us", "UTC"),
    "is_anomalous": pl.Boolean(),
    "overall_score": pl.Float64(),
    "surprise": pl.Float64(),
    "confidence": pl.Float64(),
    "context": pl.String(),
    "axes": pl.String(),
}
_REQUIRED = ("player_id", "taxonomy_version", "as_of", "is_anomalous", "overall_score", "surprise")
ANOMALY_SCORE_FLAG = 0.7


@dataclass(frozen=True)
class AnomalyPage:
    items: list[AnomalyDetection]
    next_cursor: str | None


def _flags(axes: Mapping[str, Any] | None) -> tuple[str, str]:
    """``|axis|...|`` of the flagged axes and ``|direction|...|`` of their directions."""
    flagged: list[str] = []
    directions: set[str] = set()
    for name, info in (axes or {}).items():
        if not isinstance(info, Mapping):
            continue
        flag = info.get("is_anomalous")
        if flag is None:
            score = info.get("anomaly_score")
            flag = score is not None and score > ANOMALY_SCORE_FLAG
        if flag:
            flagged.append(str(name))
            if info.get("direction"):
                directions.add(str(info["direction"]))
    return "|" + "".join(f"{a}|" for a in sorted(flagged)), "|" + "".join(f"{d}|" for d in sorted(directions))


def _frame(detections: pl.DataFrame | Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    if not isinstance(detections, pl.DataFrame):
        rows = []
        for det in detections:
            row = dict(det)
            if row.get("axes") is not None and not isinstance(row["axes"], str):
                row["axes"] = json_dumps(row["axes"])
            rows.append(row)
        detections = pl.DataFrame(rows, infer_schema_length=None)
    missing = [c for c in _REQUIRED if c not in detections.columns]
    if missing:
        raise ValueError(f"detections lack column(s) {missing}")
    exprs = []
    for name, dtype in _SCHEMA.items():
        if name not in detections.columns:
            value = utcnow() if name == "detected_at" else None
            exprs.append(pl.lit(value, dtype=dtype).alias(name))
        elif name == "axes":
            exprs.append(_bulk.json_text(detections, name).alias(name))
        elif isinstance(dtype, pl.Datetime):
            src = detections.schema[name]
            col = pl.col(name)
            col = col.dt.replace_time_zone("UTC") if getattr(src, "time_zone", None) is None else col
            exprs.append(col.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(name))
        elif dtype == pl.Float64:
            # NaN is null (SQLite cannot store NaN): a NaN score fails the NOT NULL on both backends.
            exprs.append(pl.col(name).cast(dtype).fill_nan(None))
        else:
            exprs.append(pl.col(name).cast(dtype))
    return detections.select(exprs)


def insert_detections(
    session: Session, game_id: str, detections: pl.DataFrame | Sequence[Mapping[str, Any]]
) -> int:
    """Append detections (a frame or dicts) for a game; returns the number stored.

    Columns: ``player_id, taxonomy_version, as_of, is_anomalous, overall_score, surprise``
    (required), ``detected_at`` (default now), ``confidence, context``, ``axes`` (per-axis dict
    ``{axis: {"anomaly_score", "surprise", "direction", "is_anomalous", ...}}``, as JSON text, a
    Struct or dicts). Axes flagged anomalous and their directions are indexed for the listings.
    """
    frame = _frame(detections)
    if frame.height == 0:
        return 0
    flags = [_flags(orjson.loads(a) if a else None) for a in frame["axes"].to_list()]
    frame = frame.with_columns(
        pl.lit(game_id).alias("game_id"),
        pl.Series("flagged_axes", [f[0] for f in flags], dtype=pl.String),
        pl.Series("directions", [f[1] for f in flags], dtype=pl.String),
    )
    session.flush()
    return _bulk.insert_frame(session, AnomalyDetection.__tablename__, frame)


def encode_cursor(surprise: float, detection_id: int) -> str:
    """An opaque cursor after the detection ``(surprise, id)`` (exact: the float travels as hex)."""
    raw = orjson.dumps([float(surprise).hex(), int(detection_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        surprise_hex, detection_id = orjson.loads(raw)
        return float.fromhex(surprise_hex), int(detection_id)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidInput("malformed cursor", field="cursor") from exc


def list_anomalies(
    session: Session,
    game_id: str,
    *,
    axis: str | None = None,
    direction: str | None = None,
    min_score: float | None = None,
    since: dt.datetime | None = None,
    anomalous_only: bool = True,
    limit: int = 100,
    cursor: str | None = None,
) -> AnomalyPage:
    """A page of the game's detections, highest ``surprise`` first (ties: newest id first).

    Filters: ``axis`` (flagged on that axis), ``direction`` (a flagged axis moved that way),
    ``min_score`` (``overall_score >=``), ``since`` (``detected_at >=``), ``anomalous_only``
    (``is_anomalous``). Pass the returned ``next_cursor`` to get the next page (``None`` at the end).
    """
    if limit < 1:
        raise InvalidInput("limit must be >= 1", field="limit")
    det = AnomalyDetection
    stmt = select(det).where(det.game_id == game_id)
    if anomalous_only:
        stmt = stmt.where(det.is_anomalous.is_(True))
    if axis:
        stmt = stmt.where(det.flagged_axes.contains(f"|{axis}|", autoescape=True))
    if direction:
        stmt = stmt.where(det.directions.contains(f"|{direction}|", autoescape=True))
    if min_score is not None:
        stmt = stmt.where(det.overall_score >= min_score)
    if since is not None:
        stmt = stmt.where(det.detected_at >= since)
    if cursor:
        after_surprise, after_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(det.surprise < after_surprise, and_(det.surprise == after_surprise, det.id < after_id))
        )
    stmt = stmt.order_by(det.surprise.desc(), det.id.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    next_cursor = encode_cursor(rows[limit - 1].surprise, rows[limit - 1].id) if len(rows) > limit else None
    return AnomalyPage(rows[:limit], next_cursor)


def list_player_detections(
    session: Session, game_id: str, player_id: str, *, limit: int = 20
) -> list[AnomalyDetection]:
    """The player's most recent detections, newest first."""
    det = AnomalyDetection
    stmt = (
        select(det)
        .where(det.game_id == game_id, det.player_id == player_id)
        .order_by(det.detected_at.desc(), det.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
