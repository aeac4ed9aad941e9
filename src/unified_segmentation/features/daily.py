"""Events -> canonical daily activity (one row per player and local day), and daily-file handling.

The Daily frame (``docs/ARCHITECTURE.md``) keeps what every later feature needs, so windows never go
back to raw events: counts and sums per type, night playtime, sums of session start-hour sines and
cosines, and sessions that had social activity.
"""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl

from unified_segmentation.errors import InvalidInput
from unified_segmentation.features._kernels import (
    US_PER_DAY,
    US_PER_HOUR,
    check_timezone,
    dates_from_days,
    factorize,
    group_sum,
    local_epoch_us,
    timestamp_us,
)

SESSION, PURCHASE, REFUND, SOCIAL = "session", "purchase", "refund", "social"
CORE_EVENT_TYPES = frozenset({SESSION, PURCHASE, REFUND, SOCIAL})
NIGHT_START_HOUR, NIGHT_END_HOUR = 22, 6
EV_PREFIX = "ev_"

DAILY_BASE_COLUMNS: tuple[str, ...] = (
    "player_id",
    "date",
    "sessions",
    "playtime_minutes",
    "night_playtime_minutes",
    "purchases",
    "spend",
    "refunds",
    "social_events",
    "social_sessions",
    "start_hour_sin_sum",
    "start_hour_cos_sum",
)
DAILY_REQUIRED_COLUMNS: tuple[str, ...] = (
    "player_id",
    "date",
    "sessions",
    "playtime_minutes",
    "purchases",
    "spend",
    "social_events",
)
#: Quantities a daily file may not know; null means "unknown", never zero.
DAILY_NULLABLE_COLUMNS: tuple[str, ...] = (
    "night_playtime_minutes",
    "social_sessions",
    "start_hour_sin_sum",
    "start_hour_cos_sum",
)
DAILY_NUMERIC_COLUMNS: tuple[str, ...] = DAILY_BASE_COLUMNS[2:]

_EVENT_COLUMNS = ("player_id", "event_type", "timestamp")
_DENSE_GROUP_LIMIT = 1 << 24
_SMALL_BATCH = 4096  # up to this many events, ids are numbered with Python sets (see _factorize_small)


def ev_column(event_type: str) -> str:
    """Daily column holding the count of a game-specific event type."""
    return f"{EV_PREFIX}{event_type}"


def sanitize_type_name(name: str) -> str:
    """Lower-case ``name`` and replace anything but letters, digits and ``_`` by ``_``."""
    return re.sub(r"[^0-9a-z_]+", "_", name.strip().lower()).strip("_") or "_"


def empty_daily(ev_columns: tuple[str, ...] | list[str] = ()) -> pl.DataFrame:
    """A Daily frame with no rows (canonical schema)."""
    schema: dict[str, pl.DataType] = {"player_id": pl.String(), "date": pl.Date()}
    schema.update({c: pl.Float64() for c in DAILY_NUMERIC_COLUMNS})
    schema.update({c: pl.Float64() for c in ev_columns})
    return pl.DataFrame(schema=schema)


def events_to_daily(events: pl.DataFrame, *, timezone: str = "UTC") -> pl.DataFrame:
    """Roll canonical events up into the canonical Daily frame.

    Parameters
    ----------
    events : pl.DataFrame
        The Events frame of ``ingest.read_events`` (``player_id, event_type, timestamp`` and
        optionally ``value``); ``timestamp`` is a UTC (or naive UTC) Datetime.
    timezone : str
        IANA zone that defines the local day, the night (22:00-06:00) and the start hour.

    Returns
    -------
    pl.DataFrame
        One row per ``(player_id, date)`` with activity, sorted by player and date. ``session``
        value is seconds; ``purchase`` / ``refund`` value is revenue; ``social`` and game-specific
        types are counted (``ev_<type>``). ``social_sessions`` counts sessions (attributed to their
        start day) with at least one social event of the same player in ``[start, start + length]``.
    """
    check_timezone(timezone)
    missing = [c for c in _EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise InvalidInput(f"events lack column(s) {', '.join(missing)}", field=missing[0])
    n = events.height
    if n == 0:
        return empty_daily()
    players = events["player_id"].cast(pl.String)
    kinds = events["event_type"].cast(pl.String)
    if players.null_count() or kinds.null_count() or events["timestamp"].null_count():
        raise InvalidInput("events have null player_id, event_type or timestamp; use ingest.read_events")

    codes = _factorize_small if n <= _SMALL_BATCH else factorize
    player_code, player_ids = codes(players)
    type_code, type_names = codes(kinds)
    utc = timestamp_us(events["timestamp"])
    local = local_epoch_us(utc, timezone)
    day = local // US_PER_DAY
    if "value" in events.columns:
        value = events["value"].cast(pl.Float64).to_numpy()  # null -> NaN
        value = np.where(np.isnan(value), 0.0, value)
    else:
        value = np.zeros(n)

    # Dense group ids of (player, day), ascending in (player, date).
    first_day = int(day.min())
    n_days = int(day.max()) - first_day + 1
    key = player_code * n_days + (day - first_day)
    if player_ids.len() * n_days <= max(_DENSE_GROUP_LIMIT, 4 * n):
        counts = np.bincount(key, minlength=player_ids.len() * n_days)
        group_keys = np.flatnonzero(counts)
        lookup = np.empty(counts.size, dtype=np.int64)
        lookup[group_keys] = np.arange(group_keys.size, dtype=np.int64)
        gid = lookup[key]
    else:
        group_keys, gid = np.unique(key, return_inverse=True)
    n_groups = group_keys.size

    names = type_names.to_list()
    index = {name: i for i, name in enumerate(names)}
    columns: dict[str, pl.Series | np.ndarray] = {
        "player_id": player_ids.gather(group_keys // n_days),
        "date": dates_from_days(group_keys % n_days + first_day),
    }
    zeros = np.zeros(n_groups)
    n_types = len(names)
    if n_groups * n_types <= _DENSE_GROUP_LIMIT:  # every count of every type in one pass
        all_counts = np.bincount(gid * n_types + type_code, minlength=n_groups * n_types)
        all_counts = all_counts.reshape(n_groups, n_types)

        def count_of(kind: str) -> np.ndarray:
            return all_counts[:, index[kind]].astype(np.float64) if kind in index else zeros

    else:

        def count_of(kind: str) -> np.ndarray:
            return group_sum(gid[type_code == index[kind]], n_groups) if kind in index else zeros

    def rows_of(kind: str) -> np.ndarray | None:
        return np.flatnonzero(type_code == index[kind]) if kind in index else None

    session = rows_of(SESSION)
    columns["sessions"] = count_of(SESSION)
    if session is not None:
        g, v = gid[session], value[session]
        hour = (local[session] % US_PER_DAY) / US_PER_HOUR
        angle = hour * (2.0 * math.pi / 24.0)
        night = (hour >= NIGHT_START_HOUR) | (hour < NIGHT_END_HOUR)
        columns["playtime_minutes"] = group_sum(g, n_groups, v) / 60.0
        columns["night_playtime_minutes"] = group_sum(g, n_groups, np.where(night, v, 0.0)) / 60.0
        columns["start_hour_sin_sum"] = group_sum(g, n_groups, np.sin(angle))
        columns["start_hour_cos_sum"] = group_sum(g, n_groups, np.cos(angle))
    else:
        for name in ("playtime_minutes", "night_playtime_minutes", "start_hour_sin_sum", "start_hour_cos_sum"):
            columns[name] = zeros
    columns["purchases"] = count_of(PURCHASE)
    purchase = rows_of(PURCHASE)
    columns["spend"] = zeros if purchase is None else group_sum(gid[purchase], n_groups, value[purchase])
    refund = rows_of(REFUND)
    columns["refunds"] = zeros if refund is None else group_sum(gid[refund], n_groups, value[refund])
    columns["social_events"] = count_of(SOCIAL)
    social = rows_of(SOCIAL)
    if session is not None and social is not None:
        flags = _social_session_flags(
            player_code[session], utc[session], value[session], player_code[social], utc[social]
        )
        columns["social_sessions"] = group_sum(g, n_groups, flags.astype(np.float64))
    else:
        columns["social_sessions"] = zeros

    other = [name for name in names if name not in CORE_EVENT_TYPES]
    for name in other:
        columns[ev_column(name)] = count_of(name)
    ordered = list(DAILY_BASE_COLUMNS) + [ev_column(name) for name in other]
    return pl.DataFrame({name: columns[name] for name in ordered})


def _factorize_small(values: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """:func:`factorize` (sorted uniques) for a few thousand values: plain Python sets and dicts cost
    a fraction of the vectorized hash table's fixed overhead at this size."""
    items = values.to_list()
    uniques = sorted(set(items))  # code-point order of str = byte order of UTF-8, as Polars sorts
    index = {v: i for i, v in enumerate(uniques)}
    codes = np.fromiter(map(index.__getitem__, items), dtype=np.int64, count=len(items))
    return codes, pl.Series(values.name, uniques, dtype=pl.String)


def _social_session_flags(
    session_player: np.ndarray,
    session_start: np.ndarray,
    session_seconds: np.ndarray,
    social_player: np.ndarray,
    social_time: np.ndarray,
) -> np.ndarray:
    """Bool ndarray of shape (n_sessions,): a social event of the same player fell in the session.

    Each social event is matched to the latest session start at or before it (an as-of match by
    player, like ``join_asof``) and counts when it is no later than that session's end.
    """
    n_sessions = session_start.size
    flags = np.zeros(n_sessions, dtype=bool)
    if n_sessions == 0 or social_time.size == 0:
        return flags
    session_end = session_start + np.round(np.minimum(session_seconds, 1e12) * 1e6).astype(np.int64)
    player = np.concatenate([session_player, social_player])
    moment = np.concatenate([session_start, social_time])
    order = _order_by_player_time(player, moment, n_sessions)
    is_session = order < n_sessions
    # Sorted position of the latest session row at or before each sorted row (-1: none yet).
    latest = np.maximum.accumulate(np.where(is_session, np.arange(order.size, dtype=np.int64), -1))
    social_rows = ~is_session
    latest = latest[social_rows]
    social_index = order[social_rows] - n_sessions
    found = latest >= 0
    safe = order[np.where(found, latest, 0)]
    safe = np.where(found, safe, 0)
    found &= session_player[safe] == social_player[social_index]
    found &= social_time[social_index] <= session_end[safe]
    flags[safe[found]] = True
    return flags


def _is_sorted(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def _order_by_player_time(player: np.ndarray, moment: np.ndarray, n_first: int) -> np.ndarray:
    """Order (int64 ndarray) of rows by player code, then time, rows ``[:n_first]`` first at ties.

    Rows are first put in time order (linear when both parts are already time-ordered, as an event
    log is: timsort merges the two runs), then a single ``np.sort`` of ``player << b | time_rank``
    keys orders them by player while keeping time order within each player.
    """
    n = player.size
    if _is_sorted(moment[:n_first]) and _is_sorted(moment[n_first:]):
        by_time = np.argsort(moment, kind="stable")
    else:
        kind = np.zeros(n, dtype=np.int64)
        kind[n_first:] = 1
        by_time = pl.Series((moment - moment.min()) * 2 + kind).arg_sort().to_numpy().astype(np.int64)
    rank_bits = max(1, (n - 1).bit_length())
    if int(player.max()).bit_length() + rank_bits > 62:
        frame = pl.DataFrame({"p": player, "t": np.arange(n, dtype=np.int64)[np.argsort(by_time)]})
        return frame.select(pl.arg_sort_by("p", "t")).to_series().to_numpy().astype(np.int64)
    key = (player[by_time] << rank_bits) | np.arange(n, dtype=np.int64)
    key.sort()
    return by_time[key & ((1 << rank_bits) - 1)]


def normalize_daily(frame: pl.DataFrame) -> pl.DataFrame:
    """Bring a daily frame with canonical column names to the canonical Daily schema.

    Required columns are cast (``date`` from Date, Datetime or ``YYYY-MM-DD`` text; numbers to
    Float64); ``refunds`` defaults to 0; unknown optional quantities (night playtime, social
    sessions, start-hour sums) stay null; every other numeric column becomes ``ev_<name>`` (null
    counted as 0) and non-numeric extra columns are dropped. No row validation: see
    ``ingest.read_daily``.
    """
    missing = [c for c in DAILY_REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInput(f"daily data lack column(s) {', '.join(missing)}", field=missing[0])
    exprs: list[pl.Expr] = [pl.col("player_id").cast(pl.String), _date_expr(frame.schema["date"])]
    for name in DAILY_NUMERIC_COLUMNS:
        if name in frame.columns:
            exprs.append(pl.col(name).cast(pl.Float64).alias(name))
        elif name == "refunds":
            exprs.append(pl.lit(0.0, dtype=pl.Float64).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(name))
    seen: set[str] = set()
    for name, dtype in frame.schema.items():
        if name in DAILY_BASE_COLUMNS or not (dtype.is_numeric() or dtype == pl.Boolean):
            continue
        target = name if name.startswith(EV_PREFIX) else ev_column(sanitize_type_name(name))
        if target in seen or target in DAILY_BASE_COLUMNS:
            raise InvalidInput(f"daily column {name!r} collides with {target!r}", field=name)
        seen.add(target)
        exprs.append(pl.col(name).cast(pl.Float64).fill_null(0.0).alias(target))
    out = frame.select(exprs)
    ev = sorted(c for c in out.columns if c.startswith(EV_PREFIX))
    return out.select([*DAILY_BASE_COLUMNS, *ev])


def _date_expr(dtype: pl.DataType) -> pl.Expr:
    col = pl.col("date")
    if dtype == pl.Date:
        return col
    if isinstance(dtype, pl.Datetime):
        return col.dt.date().alias("date")
    if dtype == pl.String:
        return col.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False).alias("date")
    return col.cast(pl.Date).alias("date")


def merge_daily(event_daily: pl.DataFrame | None, file_daily: pl.DataFrame | None) -> pl.DataFrame:
    """Combine the events' roll-up with ingested daily rows.

    A daily-file row replaces the roll-up of the same ``(player_id, date)`` entirely; other days
    keep the roll-up. ``ev_*`` counts missing on one side are 0; unknown optional quantities of the
    file's rows stay null. Sorted by player and date.
    """
    if file_daily is None or file_daily.height == 0:
        return event_daily if event_daily is not None else empty_daily()
    if event_daily is None or event_daily.height == 0:
        return file_daily.sort("player_id", "date")
    kept = event_daily.join(file_daily.select("player_id", "date"), on=["player_id", "date"], how="anti")
    out = pl.concat([kept, file_daily], how="diagonal_relaxed")
    ev = sorted({c for c in out.columns if c.startswith(EV_PREFIX)})
    out = out.with_columns([pl.col(c).fill_null(0.0) for c in ev])
    return out.select([*DAILY_BASE_COLUMNS, *ev]).sort("player_id", "date")
