"""The per-request read path: one player's state and daily rows in two indexed queries, no Polars.

A single categorize or detect call is dominated by fixed costs, so this path skips the ORM, the
SQLAlchemy result layer and the frame construction of :func:`load_daily`: it runs two statements on a
pooled DBAPI connection
and hands the rows to the feature code as :class:`~unified_segmentation.features.DailyRows`. It reads
exactly the rows :func:`load_daily` would read for that player and window, so both paths agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from ...features.windows import DailyRows
from .. import _bulk
from .activity import DAILY_COLUMNS

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_NO_DAY = np.iinfo(np.int64).max


@dataclass(frozen=True)
class RequestState:
    """What a request needs to know about its game and player before reading activity."""

    settings_json: str  # the game's settings as stored (JSON text): a cache key for parsed settings
    active_version: int | None
    first_seen: dt.date | None  # None: the player is unknown in this game


@lru_cache(maxsize=4)
def _state_sql(kind: str) -> str:
    p = _bulk.param(kind)
    return (
        f"SELECT {_bulk.sql_json(kind, 'g.settings')}, t.active_version, "
        f"(SELECT {_bulk.sql_date(kind, 'pl.first_seen')} FROM players pl "
        f"WHERE pl.game_id = g.game_id AND pl.player_id = {p}) "
        "FROM games g LEFT JOIN game_behavioral_taxonomy t ON t.game_id = g.game_id "
        f"WHERE g.game_id = {p}"
    )


@lru_cache(maxsize=4)
def _daily_sql(kind: str) -> str:
    p = _bulk.param(kind)
    return (
        f"SELECT {_bulk.sql_date(kind, 'date')}, {', '.join(DAILY_COLUMNS)}, {_bulk.sql_json(kind, 'custom')} "
        f"FROM daily_activity WHERE game_id = {p} AND player_id = {p} AND date >= {p} AND date <= {p} "
        "ORDER BY date"
    )


def request_state(cursor: Any, kind: str, game_id: str, player_id: str) -> RequestState | None:
    """The game's settings and active version and the player's first activity; ``None``: no such game.

    ``cursor`` is a DBAPI cursor of a pooled connection (``engine.raw_connection().cursor()``) and
    ``kind`` its dialect name (``"postgresql"`` / ``"sqlite"``).
    """
    cursor.execute(_state_sql(kind), (player_id, game_id))
    row = cursor.fetchone()
    if row is None:
        return None
    settings, active, first = row
    if not isinstance(settings, str):  # a driver that decoded the JSON itself
        settings = orjson.dumps(settings or {}).decode()
    return RequestState(settings or "{}", None if active is None else int(active),
                        dt.date.fromisoformat(first) if first else None)


def player_daily_rows(cursor: Any, kind: str, game_id: str, player_id: str, first_seen: dt.date | None,
                      start: dt.date, end: dt.date) -> DailyRows:
    """The player's daily rows with ``start <= date <= end`` as :class:`DailyRows` of one player.

    Columns are those of :func:`load_daily` for the same rows: the value columns, NaN where stored
    NULL, and one ``ev_<type>`` column per game-specific type present in these rows (0 where absent;
    ``custom`` stores the ``ev_<type>`` keys themselves).
    """
    params = (game_id, player_id, _bulk.date_param(kind, start), _bulk.date_param(kind, end))
    cursor.execute(_daily_sql(kind), params)
    rows = cursor.fetchall()
    n = len(rows)
    days = np.fromiter((dt.date.fromisoformat(r[0]).toordinal() - _EPOCH_ORDINAL for r in rows),
                       dtype=np.int64, count=n)
    values: dict[str, np.ndarray] = {}
    if n:
        table = np.array([r[1:-1] for r in rows], dtype=np.float64)  # None -> NaN
        for j, name in enumerate(DAILY_COLUMNS):
            values[name] = table[:, j]
        custom = [r[-1] for r in rows]
        decoded = [orjson.loads(c) if isinstance(c, str | bytes) else (c or {}) for c in custom]
        keys = sorted({k for d in decoded for k in d})
        for key in keys:
            values[key] = np.array([float(d.get(key) or 0.0) for d in decoded], dtype=np.float64)
    else:
        for name in DAILY_COLUMNS:
            values[name] = np.empty(0, dtype=np.float64)
    first = np.array([_NO_DAY if first_seen is None else first_seen.toordinal() - _EPOCH_ORDINAL],
                     dtype=np.int64)
    return DailyRows([player_id], np.zeros(n, dtype=np.int64), days, first, values)


__all__ = ["RequestState", "player_daily_rows", "request_state"]
