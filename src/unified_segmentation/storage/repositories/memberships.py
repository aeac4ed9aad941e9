"""Player segment memberships and typical offsets, written and read in bulk.

A write replaces, for one taxonomy version, all stored rows of the players present in the frame:
their rows are deleted and the new ones appended, in primary-key order, with a binary ``COPY``
encoded column by column (PostgreSQL, :mod:`.._pgcopy`) or one ``executemany`` (SQLite), under a
lock per (game, version) so concurrent writers of the same players queue instead of colliding.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from sqlalchemy.orm import Session

from .. import _bulk, _pgcopy
from ..models import PlayerSegmentMembership, PlayerTypicalOffset, utcnow

__all__ = [
    "MEMBERSHIP_SCHEMA",
    "OFFSET_SCHEMA",
    "bulk_write_memberships",
    "bulk_write_offsets",
    "load_memberships",
    "load_offsets",
]

#: Frame accepted by :func:`bulk_write_memberships` and returned by :func:`load_memberships`.
#: ``position_offset`` is JSON text (``{metric: value}``); a Struct column is accepted on input.
MEMBERSHIP_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.String(),
    "axis": pl.String(),
    "segment_id": pl.Int64(),
    "is_primary": pl.Boolean(),
    "membership_strength": pl.Float64(),
    "membership_probability": pl.Float64(),
    "typicality": pl.Float64(),
    "position_offset": pl.String(),
    "distance_from_center": pl.Float64(),
    "confidence": pl.Float64(),
    "last_updated": pl.Datetime("us", "UTC"),
}
_MEMBERSHIP_REQUIRED = ("player_id", "axis", "segment_id", "membership_strength")

#: Frame accepted by :func:`bulk_write_offsets` and returned by :func:`load_offsets`.
#: ``offset`` (metric units) and ``offset_model`` (model space) are JSON text ``{metric: value}``.
OFFSET_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.String(),
    "axis": pl.String(),
    "segment_id": pl.Int64(),
    "offset": pl.String(),
    "offset_model": pl.String(),
    "typical_exposure_days": pl.Float64(),
    "updated_at": pl.Datetime("us", "UTC"),
}
_OFFSET_REQUIRED = ("player_id", "axis", "segment_id")
_JSON_COLUMNS = frozenset({"position_offset", "offset", "offset_model"})


def _conform(
    frame: pl.DataFrame, schema: dict[str, pl.DataType], required: Sequence[str], stamp: str
) -> pl.DataFrame:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}")
    exprs = []
    for name, dtype in schema.items():
        if name not in frame.columns:
            if name == stamp:
                exprs.append(pl.lit(utcnow()).dt.cast_time_unit("us").alias(name))
            elif name == "is_primary":
                exprs.append(pl.lit(False).alias(name))
            else:
                exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif name in _JSON_COLUMNS:
            exprs.append(_bulk.json_text(frame, name).alias(name))
        elif isinstance(dtype, pl.Datetime):
            src = frame.schema[name]
            col = pl.col(name)
            col = col.dt.replace_time_zone("UTC") if getattr(src, "time_zone", None) is None else col
            exprs.append(col.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(name))
        else:
            exprs.append(pl.col(name).cast(dtype))
    return frame.select(exprs)


def _replace_rows(
    session: Session, table: str, game_id: str, version: int, frame: pl.DataFrame, order: Sequence[str]
) -> int:
    if frame.height == 0:
        return 0
    kind = _bulk.dialect(session)
    session.flush()
    _bulk.lock(session, f"useg:{table}:{game_id}:{version}")
    players = frame["player_id"].unique().to_list()
    p = _bulk.param(kind)
    cond, value = _bulk.in_list(kind, "player_id", players)
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE game_id = {p} AND taxonomy_version = {p} AND {cond}",
            (game_id, version, value),
        )
    rows = frame.select(
        pl.lit(game_id, dtype=pl.String).alias("game_id"),
        pl.lit(version, dtype=pl.Int64).alias("taxonomy_version"),
        pl.all(),
    )
    # Primary-key order: one ordered pass over the index instead of random inserts.
    rows = rows.sort(list(order))
    if kind == "postgresql":
        with _bulk.dbapi_cursor(session) as cursor:
            return _pgcopy.copy_frame_binary(cursor, table, rows)
    return _bulk.insert_frame(session, table, rows)


def bulk_write_memberships(session: Session, game_id: str, version: int, frame: pl.DataFrame) -> int:
    """Replace the memberships of the frame's players for ``version``; returns rows written.

    ``frame``: :data:`MEMBERSHIP_SCHEMA` columns (``player_id, axis, segment_id,
    membership_strength`` required; ``last_updated`` defaults to now). One row per (player, segment).
    """
    rows = _conform(frame, MEMBERSHIP_SCHEMA, _MEMBERSHIP_REQUIRED, "last_updated")
    return _replace_rows(
        session, PlayerSegmentMembership.__tablename__, game_id, version, rows, ("player_id", "segment_id")
    )


def bulk_write_offsets(session: Session, game_id: str, version: int, frame: pl.DataFrame) -> int:
    """Replace the typical offsets of the frame's players for ``version``; returns rows written.

    ``frame``: :data:`OFFSET_SCHEMA` columns, one row per (player, axis).
    """
    rows = _conform(frame, OFFSET_SCHEMA, _OFFSET_REQUIRED, "updated_at")
    return _replace_rows(
        session, PlayerTypicalOffset.__tablename__, game_id, version, rows, ("player_id", "axis")
    )


def _load(
    session: Session,
    table: str,
    schema: dict[str, pl.DataType],
    stamp: str,
    game_id: str,
    version: int,
    player_ids: Sequence[str] | None,
    order: str,
) -> pl.DataFrame:
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    where = [f"game_id = {p}", f"taxonomy_version = {p}"]
    params: list[object] = [game_id, version]
    if player_ids is not None:
        if not player_ids:
            return pl.DataFrame(schema=schema)
        cond, value = _bulk.in_list(kind, "player_id", list(player_ids))
        where.append(cond)
        params.append(value)
    select_cols = []
    for name, dtype in schema.items():
        if name in _JSON_COLUMNS:
            select_cols.append(_bulk.sql_json(kind, f'"{name}"'))
        elif name == stamp:
            select_cols.append(_bulk.sql_datetime(kind, name))
        elif dtype == pl.Boolean:
            select_cols.append(f'CAST("{name}" AS INTEGER)')
        else:
            select_cols.append(f'"{name}"')
    query = f"SELECT {', '.join(select_cols)} FROM {table} WHERE {' AND '.join(where)} ORDER BY {order}"
    # Read timestamps as text and booleans as 0/1 integers; cast afterwards.
    text_schema: dict[str, pl.DataType] = {}
    for name, dtype in schema.items():
        if name == stamp:
            text_schema[name] = pl.String()
        elif dtype == pl.Boolean:
            text_schema[name] = pl.Int64()
        else:
            text_schema[name] = dtype
    frame = _bulk.read_query(session, query, params, text_schema)
    frame = _bulk.parse_temporal(frame, datetimes=[stamp])
    return frame.with_columns(pl.col(c).cast(t) for c, t in schema.items() if c != stamp)


def load_memberships(
    session: Session, game_id: str, version: int, player_ids: Sequence[str] | None = None
) -> pl.DataFrame:
    """Stored memberships for ``version`` (:data:`MEMBERSHIP_SCHEMA`), by player, axis, segment."""
    return _load(
        session,
        PlayerSegmentMembership.__tablename__,
        MEMBERSHIP_SCHEMA,
        "last_updated",
        game_id,
        version,
        player_ids,
        "player_id, axis, segment_id",
    )


def load_offsets(
    session: Session, game_id: str, version: int, player_ids: Sequence[str] | None = None
) -> pl.DataFrame:
    """Stored typical offsets for ``version`` (:data:`OFFSET_SCHEMA`), by player and axis."""
    return _load(
        session,
        PlayerTypicalOffset.__tablename__,
        OFFSET_SCHEMA,
        "updated_at",
        game_id,
        version,
        player_ids,
        "player_id, axis",
    )
