"""Anomaly detections: bulk insertion and listings sorted by surprise with cursor pagination."""

from __future__ import annotations

import base64
import binascii
import contextlib
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


# Up to this many rows (dicts), detections go as plain rows in one multi-row ``INSERT`` (PostgreSQL) or
# one ``executemany`` (SQLite): no Polars frame, no CSV and no ``COPY`` for the background writer's
# small batches (one single detection: ~3 ms of CPU by the frame path, ~0.2 ms this way).
SMALL_INSERT_ROWS = 1_000
_COLUMNS = (
    "game_id", "player_id", "taxonomy_version", "as_of", "detected_at", "is_anomalous", "overall_score",
    "surprise", "confidence", "context", "axes", "flagged_axes", "directions",
)
_UTC = dt.UTC


def _utc(value: Any, sqlite: bool) -> Any:
    """An aware (PostgreSQL) or SQLAlchemy's naive-UTC text (SQLite) form of a datetime (naive = UTC)."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    value = value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else value


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if value != value else value  # NaN is null, as on the frame path (fails NOT NULL)


def _plain_rows(game_id: str, detections: Sequence[Mapping[str, Any]], sqlite: bool) -> list[tuple]:
    """The table's rows (``_COLUMNS`` order) of detection dicts, as the frame path would store them."""
    now = None
    out = []
    for det in detections:
        missing = [c for c in _REQUIRED if c not in det]
        if missing:
            raise ValueError(f"detections lack column(s) {missing}")
        detected_at = det.get("detected_at")
        if detected_at is None:
            detected_at = now = now or utcnow()
        axes = det.get("axes")
        if axes is None:
            axes_text, parsed = None, None
        elif isinstance(axes, str):
            axes_text, parsed = axes, (orjson.loads(axes) if axes else None)
        else:
            axes_text, parsed = json_dumps(axes), axes
        flagged, directions = _flags(parsed)
        version = det["taxonomy_version"]
        flag = det["is_anomalous"]
        context = det.get("context")
        out.append((
            game_id, str(det["player_id"]), None if version is None else int(version),
            _utc(det["as_of"], sqlite), _utc(detected_at, sqlite), None if flag is None else bool(flag),
            _float(det["overall_score"]), _float(det["surprise"]), _float(det.get("confidence")),
            None if context is None else str(context), axes_text, flagged, directions,
        ))
    return out


def _insert_plain(session: Session, rows: list[tuple]) -> None:
    cols = ", ".join(_COLUMNS)
    table = AnomalyDetection.__tablename__
    with _bulk.dbapi_cursor(session) as cursor:
        if _bulk.dialect(session) == "postgresql":
            one = "(" + ", ".join("%s::jsonb" if c == "axes" else "%s" for c in _COLUMNS) + ")"
            cursor.execute(f"INSERT INTO {table} ({cols}) VALUES " + ", ".join([one] * len(rows)),
                           [v for row in rows for v in row])
        else:
            marks = ", ".join("?" for _ in _COLUMNS)
            cursor.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)


def insert_detections(
    session: Session, game_id: str, detections: pl.DataFrame | Sequence[Mapping[str, Any]]
) -> int:
    """Append detections (a frame or dicts) for a game; returns the number stored.

    Columns: ``player_id, taxonomy_version, as_of, is_anomalous, overall_score, surprise``
    (required), ``detected_at`` (default now), ``confidence, context``, ``axes`` (per-axis dict
    ``{axis: {"anomaly_score", "surprise", "direction", "is_anomalous", ...}}``, as JSON text, a
    Struct or dicts). Axes flagged anomalous and their directions are indexed for the listings.

    Rows are stored in the order given (ids ascending). Up to ``SMALL_INSERT_ROWS`` dicts go as plain
    rows in one statement (PostgreSQL) or one ``executemany`` (SQLite); frames and larger batches
    through a Polars frame and ``COPY`` (PostgreSQL).
    """
    if not isinstance(detections, pl.DataFrame) and len(detections) <= SMALL_INSERT_ROWS:
        if not detections:
            return 0
        rows = None
        # values of other types (e.g. dates as text): the frame path converts or refuses them
        with contextlib.suppress(TypeError, AttributeError):
            rows = _plain_rows(game_id, detections, _bulk.dialect(session) == "sqlite")
        if rows is not None:
            session.flush()
            _insert_plain(session, rows)
            return len(rows)
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
