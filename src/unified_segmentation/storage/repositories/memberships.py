"""Player segment memberships and typical offsets, written and read in bulk.

A write replaces, for one taxonomy version, all stored rows of the players present in the frame:
their rows are deleted and the new ones appended, in primary-key order, with a binary ``COPY``
encoded column by column (PostgreSQL, :mod:`.._pgcopy`) or one ``executemany`` (SQLite), under a
lock per (game, version) so concurrent writers of the same players queue instead of colliding.

A write can be prepared apart from its unit of work (:func:`prepare_memberships`,
:func:`prepare_offsets`, then :func:`write_prepared`): the rows are conformed, sorted and, on
PostgreSQL, encoded for the binary ``COPY`` beforehand, so a writer thread holding the transaction
only sends bytes (``Services.categorize_all`` prepares the next chunk while the previous one is sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from sqlalchemy.orm import Session

from .. import _bulk, _pgcopy
from ..models import PlayerSegmentMembership, PlayerTypicalOffset, utcnow

__all__ = [
    "MEMBERSHIP_SCHEMA",
    "OFFSET_SCHEMA",
    "PreparedRows",
    "bulk_write_memberships",
    "bulk_write_offsets",
    "load_memberships",
    "load_offsets",
    "pg_copy_types",
    "prepare_memberships",
    "prepare_offsets",
    "write_prepared",
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


#: Up to this many rows a prepared write is encoded at once; beyond, it is encoded and sent in blocks
#: while writing (memory stays bounded).
PREPARE_MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class PreparedRows:
    """Rows ready to replace the stored rows of their players in ``table`` for one version.

    ``rows``: the table's columns, in primary-key order. ``payload``: the same rows in binary
    ``COPY`` layout (columns ``columns``) when prepared for PostgreSQL, else ``None``.
    """

    table: str
    game_id: str
    version: int
    players: pl.Series
    rows: pl.DataFrame
    columns: list[str] | None = None
    payload: np.ndarray | None = None

    @property
    def height(self) -> int:
        return self.rows.height


def pg_copy_types(session: Session) -> dict[str, dict[str, str]] | None:
    """The server's column types of the two tables (to prepare PostgreSQL writes); ``None`` on SQLite."""
    if _bulk.dialect(session) != "postgresql":
        return None
    tables = (PlayerSegmentMembership.__tablename__, PlayerTypicalOffset.__tablename__)
    with _bulk.dbapi_cursor(session) as cursor:
        return {t: _pgcopy.pg_table_types(cursor, t) for t in tables}


def _prepare(
    table: str,
    game_id: str,
    version: int,
    rows: pl.DataFrame,
    order: Sequence[str],
    pg_types: dict[str, dict[str, str]] | None,
) -> PreparedRows:
    players = rows["player_id"].unique()
    rows = rows.select(
        pl.lit(game_id, dtype=pl.String).alias("game_id"),
        pl.lit(version, dtype=pl.Int64).alias("taxonomy_version"),
        pl.all(),
    )
    # Primary-key order: one ordered pass over the index instead of random inserts.
    rows = rows.sort(list(order))
    columns = payload = None
    if pg_types is not None and 0 < rows.height <= PREPARE_MAX_ROWS:
        columns, payload = _pgcopy.encode_rows(rows, pg_types[table])
    return PreparedRows(table, game_id, version, players, rows, columns, payload)


def _pg_text_array(values: pl.Series) -> str:
    """A PostgreSQL ``text[]`` literal of non-null strings (each quoted, ``\\`` and ``"`` escaped)."""
    quoted = values.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
    return "{" + ('"' + quoted + '"').str.join(",").item() + "}"


def write_prepared(session: Session, prepared: PreparedRows, *, player_range: tuple[str, str] | None = None) -> int:
    """Replace the stored rows of the prepared rows' players (one version) by them; returns rows written.

    ``player_range=(first, last)``: replace instead every stored row of the version whose player id
    lies in ``[first, last]`` (a whole run of the game's ids, as ``categorize_all`` writes them): one
    range of the key is deleted rather than each player looked up.
    """
    if prepared.height == 0:
        return 0
    table = prepared.table
    kind = _bulk.dialect(session)
    session.flush()
    _bulk.lock(session, f"useg:{table}:{prepared.game_id}:{prepared.version}")
    p = _bulk.param(kind)
    head = f"DELETE FROM {table} WHERE game_id = {p} AND taxonomy_version = {p}"
    params: tuple = (prepared.game_id, prepared.version)
    if player_range is not None:
        statement = f"{head} AND player_id >= {p} AND player_id <= {p}"
        params = (*params, *player_range)
    elif kind == "postgresql":
        # one key lookup per player (the ids as one array literal built by Polars): a list tested row
        # by row (= ANY) plans as a scan of all the game's rows of the version
        statement = (
            f"DELETE FROM {table} USING unnest({p}::text[]) AS u(pid) WHERE {table}.game_id = {p} "
            f"AND {table}.taxonomy_version = {p} AND {table}.player_id = u.pid"
        )
        params = (_pg_text_array(prepared.players.sort()), *params)
    else:
        cond, value = _bulk.in_list(kind, "player_id", prepared.players.to_list())
        statement = f"{head} AND {cond}"
        params = (*params, value)
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute(statement, params)
    if kind != "postgresql":
        return _bulk.insert_frame(session, table, prepared.rows)
    with _bulk.dbapi_cursor(session) as cursor:
        if prepared.payload is not None and prepared.columns is not None:
            return _pgcopy.copy_encoded(cursor, table, prepared.columns, prepared.payload, prepared.height)
        return _pgcopy.copy_frame_binary(cursor, table, prepared.rows)


def prepare_memberships(
    game_id: str, version: int, frame: pl.DataFrame, *, pg_types: dict[str, dict[str, str]] | None = None
) -> PreparedRows:
    """:func:`bulk_write_memberships`' rows, prepared for :func:`write_prepared` (``pg_types`` from
    :func:`pg_copy_types` on PostgreSQL: the rows are then encoded for the binary ``COPY`` too)."""
    rows = _conform(frame, MEMBERSHIP_SCHEMA, _MEMBERSHIP_REQUIRED, "last_updated")
    table = PlayerSegmentMembership.__tablename__
    return _prepare(table, game_id, version, rows, ("player_id", "segment_id"), pg_types)


def prepare_offsets(
    game_id: str, version: int, frame: pl.DataFrame, *, pg_types: dict[str, dict[str, str]] | None = None
) -> PreparedRows:
    """:func:`bulk_write_offsets`' rows, prepared for :func:`write_prepared` (see :func:`prepare_memberships`)."""
    rows = _conform(frame, OFFSET_SCHEMA, _OFFSET_REQUIRED, "updated_at")
    return _prepare(PlayerTypicalOffset.__tablename__, game_id, version, rows, ("player_id", "axis"), pg_types)


def bulk_write_memberships(session: Session, game_id: str, version: int, frame: pl.DataFrame) -> int:
    """Replace the memberships of the frame's players for ``version``; returns rows written.

    ``frame``: :data:`MEMBERSHIP_SCHEMA` columns (``player_id, axis, segment_id,
    membership_strength`` required; ``last_updated`` defaults to now). One row per (player, segment).
    """
    return write_prepared(session, prepare_memberships(game_id, version, frame))


def bulk_write_offsets(session: Session, game_id: str, version: int, frame: pl.DataFrame) -> int:
    """Replace the typical offsets of the frame's players for ``version``; returns rows written.

    ``frame``: :data:`OFFSET_SCHEMA` columns, one row per (player, axis).
    """
    return write_prepared(session, prepare_offsets(game_id, version, frame))


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
