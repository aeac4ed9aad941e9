"""The per-request read path: one player's state and daily rows in one indexed statement, no Polars.

A single categorize or detect call is dominated by fixed costs, so this path skips the ORM, the
SQLAlchemy result layer and the frame construction of :func:`load_daily`. :func:`request_read` runs one
statement on a DBAPI connection (the game's settings, active version and the player's first activity,
then the player's daily rows of a window, as one ``UNION ALL``: one round trip, one snapshot) and hands
the rows to the feature code as :class:`~unified_segmentation.features.DailyRows`. The window depends on
the game's settings, so the caller passes the window of the settings it last saw and checks the
settings that come back; :func:`request_state` + :func:`player_daily_rows` (two statements) serve the
first call of a game and a call that finds the settings changed. Both read exactly the rows
:func:`load_daily` would read for that player and window, so the request and batch paths agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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


def _day_sql(kind: str, column: str) -> str:
    """A date column as its epoch day number (an integer), whatever the server's DateStyle."""
    if kind == "postgresql":
        return f"({column} - DATE '1970-01-01')"
    return f"CAST(julianday({column}) - 2440587.5 AS INTEGER)"  # SQLite stores YYYY-MM-DD text


def _state_select(kind: str, g: str, p: str, padding: str = "") -> str:
    return (
        f"{_bulk.sql_json(kind, 'gm.settings')}, t.active_version, "
        f"(SELECT {_day_sql(kind, 'pl.first_seen')} FROM players pl "
        f"WHERE pl.game_id = gm.game_id AND pl.player_id = {p}){padding} "
        "FROM games gm LEFT JOIN game_behavioral_taxonomy t ON t.game_id = gm.game_id "
        f"WHERE gm.game_id = {g}"
    )


def _daily_select(kind: str, g: str, p: str, s: str, e: str) -> str:
    return (
        f"{_day_sql(kind, 'date')}, {', '.join(DAILY_COLUMNS)}, {_bulk.sql_json(kind, 'custom')} "
        f"FROM daily_activity WHERE game_id = {g} AND player_id = {p} AND date >= {s} AND date <= {e}"
    )


@lru_cache(maxsize=4)
def _state_sql(kind: str) -> str:
    """``settings, active_version, first-seen day`` (no row: no such game)."""
    q = _bulk.param(kind)
    return f"SELECT {_state_select(kind, q, q)}"


@lru_cache(maxsize=4)
def _daily_sql(kind: str) -> str:
    """``day, *DAILY_COLUMNS, custom`` of one player's rows in a window, by day."""
    q = _bulk.param(kind)
    return f"SELECT {_daily_select(kind, q, q, q, q)} ORDER BY date"


@lru_cache(maxsize=4)
def _read_sql(kind: str) -> str:
    """The state row (tag 0: ``settings, active_version, first-seen day``, the value columns NULL) then the
    daily rows (tag 1: ``NULL, NULL, day, *DAILY_COLUMNS, custom``), by tag and day."""
    if kind == "postgresql":
        g, p, s, e = "%(g)s", "%(p)s", "%(s)s", "%(e)s"
        nulls = ", ".join("NULL::float8" for _ in DAILY_COLUMNS)
        text_null, int_null = "NULL::text", "NULL::integer"
    else:
        g, p, s, e = ":g", ":p", ":s", ":e"
        nulls = ", ".join("NULL" for _ in DAILY_COLUMNS)
        text_null = int_null = "NULL"
    return (
        f"SELECT 0, {_state_select(kind, g, p, f', {nulls}, {text_null}')} "
        f"UNION ALL SELECT 1, {text_null}, {int_null}, {_daily_select(kind, g, p, s, e)} "
        "ORDER BY 1, 4"
    )


def _state(settings: Any, active: Any, first_day: Any) -> RequestState:
    if not isinstance(settings, str):  # a driver that decoded the JSON itself
        settings = orjson.dumps(settings or {}).decode()
    first = None if first_day is None else dt.date.fromordinal(int(first_day) + _EPOCH_ORDINAL)
    return RequestState(settings or "{}", None if active is None else int(active), first)


def request_state(cursor: Any, kind: str, game_id: str, player_id: str) -> RequestState | None:
    """The game's settings and active version and the player's first activity; ``None``: no such game.

    ``cursor`` is a DBAPI cursor (of ``engine.raw_connection()``, or a dedicated read connection) and
    ``kind`` its dialect name (``"postgresql"`` / ``"sqlite"``).
    """
    cursor.execute(_state_sql(kind), (player_id, game_id))
    row = cursor.fetchone()
    return None if row is None else _state(*row)


def request_read(cursor: Any, kind: str, game_id: str, player_id: str, start: dt.date, end: dt.date
                 ) -> tuple[RequestState | None, DailyRows | None]:
    """:func:`request_state` and :func:`player_daily_rows` (``start <= date <= end``) in one statement.

    Returns ``(None, None)`` when there is no such game and ``(state, None)`` when the player is unknown.
    The caller checks that ``state.settings_json`` gives the window it asked for. On PostgreSQL the
    statement is prepared on its connection at first use.
    """
    params = {"g": game_id, "p": player_id, "s": _bulk.date_param(kind, start), "e": _bulk.date_param(kind, end)}
    if kind == "postgresql":
        cursor.execute(_read_sql(kind), params, prepare=True)
    else:
        cursor.execute(_read_sql(kind), params)
    rows = cursor.fetchall()
    if not rows or rows[0][0] != 0:
        return None, None
    head = rows[0]
    state = _state(head[1], head[2], head[3])
    if state.first_seen is None:
        return state, None
    return state, _daily_rows(rows[1:], 3, player_id, int(head[3]))


@lru_cache(maxsize=4)
def _read_many_sql(kind: str) -> str:
    """:func:`_read_sql` for a list of players (bound as one array / JSON list): the game row (tag 0:
    ``settings, active_version``), each known player's first-seen day (tag 1), then the daily rows of the
    window (tag 2: ``day, *DAILY_COLUMNS, custom``); column 2 is the player, rows by tag, player and day.

    Each player's rows are read as the single-player statement reads them, by the primary key: on
    PostgreSQL as a ``LATERAL`` subquery kept apart by ``OFFSET 0`` (else the planner may flatten it
    into one scan of the game's whole window when the table's statistics are stale).
    """
    value_cols = ", ".join("d." + c for c in DAILY_COLUMNS)
    if kind == "postgresql":
        g, ids, pid = "%(g)s", "unnest(%(p)s::text[]) AS u(pid)", "u.pid"
        text_null, int_null = "NULL::text", "NULL::integer"
        nulls = ", ".join("NULL::float8" for _ in DAILY_COLUMNS)

        def per_player(table: str, alias: str, extra: str = "") -> str:
            return (f"{ids} CROSS JOIN LATERAL (SELECT * FROM {table} WHERE game_id = {g} "
                    f"AND player_id = {pid}{extra} OFFSET 0) {alias}")
        window = " AND date >= %(s)s AND date <= %(e)s"
    else:
        g, ids, pid = ":g", "json_each(:p) AS u", "u.value"
        text_null = int_null = "NULL"
        nulls = ", ".join("NULL" for _ in DAILY_COLUMNS)

        def per_player(table: str, alias: str, extra: str = "") -> str:
            return f"{ids} JOIN {table} {alias} ON {alias}.game_id = {g} AND {alias}.player_id = {pid}{extra}"
        window = " AND d.date >= :s AND d.date <= :e"
    return (
        f"SELECT 0, {text_null}, {_bulk.sql_json(kind, 'gm.settings')}, t.active_version, {int_null}, {nulls}, "
        f"{text_null} FROM games gm LEFT JOIN game_behavioral_taxonomy t ON t.game_id = gm.game_id "
        f"WHERE gm.game_id = {g} "
        f"UNION ALL SELECT 1, pl.player_id, {text_null}, {int_null}, {_day_sql(kind, 'pl.first_seen')}, {nulls}, "
        f"{text_null} FROM {per_player('players', 'pl')} "
        f"UNION ALL SELECT 2, d.player_id, {text_null}, {int_null}, {_day_sql(kind, 'd.date')}, {value_cols}, "
        f"{_bulk.sql_json(kind, 'd.custom')} FROM {per_player('daily_activity', 'd', window)} "
        "ORDER BY 1, 2, 5"
    )


def request_read_many(cursor: Any, kind: str, game_id: str, player_ids: Sequence[str], start: dt.date,
                      end: dt.date) -> tuple[RequestState | None, DailyRows | None]:
    """:func:`request_read` for several players in one statement (the micro-batched request path).

    ``player_ids`` must be distinct. Returns ``(None, None)`` when there is no such game; otherwise the
    game's state (``first_seen`` is ``None``: per-player dates are in the rows) and the rows of the
    players the game knows, as one :class:`DailyRows` whose ``players`` are those players in the order
    given (``None`` when it knows none of them). Each player's rows equal :func:`request_read`'s.
    """
    params = {"g": game_id, "s": _bulk.date_param(kind, start), "e": _bulk.date_param(kind, end)}
    if kind == "postgresql":
        params["p"] = list(player_ids)
        cursor.execute(_read_many_sql(kind), params, prepare=True)
    else:
        params["p"] = orjson.dumps(list(player_ids)).decode()
        cursor.execute(_read_many_sql(kind), params)
    rows = cursor.fetchall()
    if not rows or rows[0][0] != 0:
        return None, None
    state = _state(rows[0][2], rows[0][3], None)
    first_of = {r[1]: int(r[4]) for r in rows if r[0] == 1}
    players = [p for p in player_ids if p in first_of]
    if not players:
        return state, None
    code_of = {p: i for i, p in enumerate(players)}
    daily = [r for r in rows if r[0] == 2]
    codes = np.fromiter((code_of[r[1]] for r in daily), dtype=np.int64, count=len(daily))
    first = np.array([first_of[p] for p in players], dtype=np.int64)
    values = _daily_values(daily, 4)
    days = np.fromiter((r[4] for r in daily), dtype=np.int64, count=len(daily))
    return state, DailyRows(players, codes, days, first, values)


def player_daily_rows(cursor: Any, kind: str, game_id: str, player_id: str, first_seen: dt.date | None,
                      start: dt.date, end: dt.date) -> DailyRows:
    """The player's daily rows with ``start <= date <= end`` as :class:`DailyRows` of one player.

    Columns are those of :func:`load_daily` for the same rows: the value columns, NaN where stored
    NULL, and one ``ev_<type>`` column per game-specific type present in these rows (0 where absent;
    ``custom`` stores the ``ev_<type>`` keys themselves).
    """
    params = (game_id, player_id, _bulk.date_param(kind, start), _bulk.date_param(kind, end))
    cursor.execute(_daily_sql(kind), params)
    first = None if first_seen is None else first_seen.toordinal() - _EPOCH_ORDINAL
    return _daily_rows(cursor.fetchall(), 0, player_id, first)


def _daily_rows(rows: Sequence[Sequence[Any]], at: int, player_id: str, first_day: int | None) -> DailyRows:
    """Rows ``(..., day, *DAILY_COLUMNS, custom)`` with the day at column ``at`` as :class:`DailyRows`."""
    n = len(rows)
    days = np.fromiter((r[at] for r in rows), dtype=np.int64, count=n)
    first = np.array([_NO_DAY if first_day is None else first_day], dtype=np.int64)
    return DailyRows([player_id], np.zeros(n, dtype=np.int64), days, first, _daily_values(rows, at))


def _daily_values(rows: Sequence[Sequence[Any]], at: int) -> dict[str, np.ndarray]:
    """The value columns of rows ``(..., day, *DAILY_COLUMNS, custom)`` (day at column ``at``): NaN where
    stored NULL, and one column per ``custom`` key present in these rows (0 where a row lacks it)."""
    n = len(rows)
    values: dict[str, np.ndarray] = {}
    if n:
        table = np.array([r[at + 1:-1] for r in rows], dtype=np.float64)  # None -> NaN
        for j, name in enumerate(DAILY_COLUMNS):
            values[name] = table[:, j]
        custom = [r[-1] for r in rows]
        if any(custom):
            decoded = [orjson.loads(c) if isinstance(c, str | bytes) else (c or {}) for c in custom]
            for key in sorted({k for d in decoded for k in d}):
                values[key] = np.array([float(d.get(key) or 0.0) for d in decoded], dtype=np.float64)
    else:
        for name in DAILY_COLUMNS:
            values[name] = np.empty(0, dtype=np.float64)
    return values


__all__ = ["RequestState", "player_daily_rows", "request_read", "request_read_many", "request_state"]
