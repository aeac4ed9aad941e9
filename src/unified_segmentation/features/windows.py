"""Windows of local days, day contexts (weekday / weekend / holiday) and per-player window features.

A window is a run of whole local days; the day containing ``as_of`` counts with the fraction of it
that has elapsed. A player's exposure starts at their first stored activity when that is later than
the window's start, and every rate divides by exposure days (DESIGN 3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import numpy as np
import polars as pl

from unified_segmentation.errors import InvalidInput
from unified_segmentation.features._kernels import check_timezone, days_from_dates, factorize
from unified_segmentation.features.daily import (
    DAILY_BASE_COLUMNS,
    EV_PREFIX,
    normalize_daily,
)
from unified_segmentation.features.metrics import OPTIONAL_METRIC_INPUTS, custom_metric

CONTEXTS: tuple[str, ...] = ("weekday", "weekend", "holiday")
WEEKDAY, WEEKEND, HOLIDAY = 0, 1, 2
#: Rates divide by ``max(exposure_days, MIN_RATE_EXPOSURE_DAYS)``: a player first seen an hour ago
#: is not extrapolated to 24 sessions a day. ``exposure_days`` itself is reported unfloored.
MIN_RATE_EXPOSURE_DAYS = 1.0
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Window:
    """Local days ``start..end`` (inclusive); ``end`` counts ``last_day_fraction`` of a day."""

    start: dt.date
    end: dt.date
    last_day_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise InvalidInput(f"window end {self.end} is before its start {self.start}", field="window")
        if not 0.0 <= float(self.last_day_fraction) <= 1.0:
            raise InvalidInput("last_day_fraction must be within [0, 1]", field="last_day_fraction")

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[dt.date]:
        """The window's local dates, oldest first."""
        return [self.start + dt.timedelta(days=i) for i in range(self.n_days)]

    def day_weights(self) -> np.ndarray:
        """Exposure of each day (float64 ndarray of shape (n_days,)): 1, the last day its fraction."""
        weights = np.ones(self.n_days)
        weights[-1] = float(self.last_day_fraction)
        return weights

    @property
    def exposure_days(self) -> float:
        return self.n_days - 1 + float(self.last_day_fraction)


def _as_of_day(as_of: dt.datetime | dt.date | str, timezone: str) -> tuple[dt.date, float]:
    """Local date of ``as_of`` and the elapsed fraction of that day."""
    if isinstance(as_of, str):
        try:
            as_of = dt.datetime.fromisoformat(as_of.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"as_of {as_of!r} is not an ISO-8601 time", field="as_of") from exc
    if not isinstance(as_of, dt.datetime):  # a date: that whole day
        return as_of, 1.0
    zone = ZoneInfo(timezone)
    local = as_of.replace(tzinfo=zone) if as_of.tzinfo is None else as_of.astimezone(zone)
    midnight = dt.datetime.combine(local.date(), dt.time(), tzinfo=zone)
    elapsed = (local.astimezone(dt.UTC) - midnight.astimezone(dt.UTC)).total_seconds()
    return local.date(), min(1.0, max(0.0, elapsed / 86_400.0))


def windows_for(
    as_of: dt.datetime | dt.date | str,
    *,
    timezone: str = "UTC",
    profile_days: int = 28,
    current_days: int = 7,
    typical_days: int = 28,
    shift_days: int = 0,
) -> dict[str, Window]:
    """The profile, current and typical windows ending at ``as_of``.

    With D the local date of ``as_of``: profile = [D-profile+1, D], current = [D-current+1, D],
    typical = [D-current-typical+1, D-current]; day D counts ``(as_of - local midnight) / 24 h``.
    ``shift_days > 0`` moves every window back by that many days, all days then full (the null run
    uses ``shift_days=current_days``). A naive ``as_of`` is local time in ``timezone``; a date
    means the end of that day.
    """
    check_timezone(timezone)
    for name, value in (("profile_days", profile_days), ("current_days", current_days),
                        ("typical_days", typical_days)):
        if int(value) < 1:
            raise InvalidInput(f"{name} must be >= 1", field=name)
    if int(shift_days) < 0:
        raise InvalidInput("shift_days must be >= 0", field="shift_days")
    day, fraction = _as_of_day(as_of, timezone)
    if shift_days:
        day, fraction = day - dt.timedelta(days=int(shift_days)), 1.0
    one = dt.timedelta(days=1)
    current_start = day - dt.timedelta(days=int(current_days) - 1)
    return {
        "profile": Window(day - dt.timedelta(days=int(profile_days) - 1), day, fraction),
        "current": Window(current_start, day, fraction),
        "typical": Window(current_start - dt.timedelta(days=int(typical_days)), current_start - one, 1.0),
    }


@lru_cache(maxsize=128)
def _holiday_days(country: str, first_year: int, last_year: int) -> frozenset[int]:
    code, _, subdiv = country.strip().upper().partition("-")
    try:
        calendar = holidays.country_holidays(code, subdiv=subdiv or None, years=range(first_year, last_year + 1))
    except (NotImplementedError, KeyError, ValueError) as exc:
        raise InvalidInput(f"unknown holiday_country {country!r}", field="holiday_country") from exc
    return frozenset((day - _EPOCH).days for day in calendar)


def holiday_dates(country: str | None, start: dt.date, end: dt.date) -> list[dt.date]:
    """Public holidays of ``country`` (ISO code, optionally ``CC-SUBDIV``) between two dates."""
    if not country:
        return []
    days = _holiday_days(country, start.year, end.year)
    lo, hi = (start - _EPOCH).days, (end - _EPOCH).days
    return sorted(_EPOCH + dt.timedelta(days=d) for d in days if lo <= d <= hi)


def day_contexts(days: np.ndarray, holiday_country: str | None = None) -> np.ndarray:
    """Context code (0 weekday, 1 weekend, 2 holiday) of epoch-day integers (int8 ndarray)."""
    days = np.asarray(days, dtype=np.int64)
    context = np.where((days + 3) % 7 >= 5, WEEKEND, WEEKDAY).astype(np.int8)  # 1970-01-01: Thursday
    if holiday_country and days.size:
        first = _EPOCH + dt.timedelta(days=int(days.min()))
        last = _EPOCH + dt.timedelta(days=int(days.max()))
        table = np.fromiter(_holiday_days(holiday_country, first.year, last.year), dtype=np.int64)
        context[np.isin(days, table)] = HOLIDAY
    return context


def _window_days(window: Window) -> np.ndarray:
    first = (window.start - _EPOCH).days
    return np.arange(first, first + window.n_days, dtype=np.int64)


def _context_code(context: str | None) -> int | None:
    if context is None:
        return None
    if context not in CONTEXTS:
        raise InvalidInput(f"context must be one of {', '.join(CONTEXTS)}", field="context")
    return CONTEXTS.index(context)


def context_day_weights(
    window: Window, holiday_country: str | None = None, *, first_date: dt.date | None = None
) -> dict[str, float]:
    """Share of the window's exposure (from ``first_date`` if later than the start) per context."""
    days = _window_days(window)
    weights = window.day_weights()
    if first_date is not None:
        weights = np.where(days >= (first_date - _EPOCH).days, weights, 0.0)
    context = day_contexts(days, holiday_country)
    totals = np.bincount(context, weights=weights, minlength=3)
    total = float(totals.sum())
    return {name: (float(totals[i]) / total if total > 0 else 0.0) for i, name in enumerate(CONTEXTS)}


def window_context(window: Window, holiday_country: str | None = None) -> str:
    """``"holiday"`` if any exposed day of the window is a holiday, else the context with most days."""
    days = _window_days(window)
    weights = window.day_weights()
    context = day_contexts(days, holiday_country)
    if np.any((context == HOLIDAY) & (weights > 0)):
        return "holiday"
    totals = np.bincount(context, weights=weights, minlength=3)
    return "weekend" if totals[WEEKEND] > totals[WEEKDAY] else "weekday"


def select_custom_types(
    daily: pl.DataFrame, min_player_share: float = 0.01, max_types: int = 50
) -> list[str]:
    """Game-specific event types worth a ``<type>_per_day`` metric.

    A type qualifies when at least ``min_player_share`` of the players in ``daily`` have one; the
    ``max_types`` most widespread are kept (ties by name). Returns type names (no ``ev_`` prefix).
    """
    ev = [c for c in daily.columns if c.startswith(EV_PREFIX)]
    if not ev or daily.height == 0:
        return []
    codes, players = factorize(daily["player_id"].cast(pl.String), sort=False)
    shares = []
    for column in ev:
        values = daily[column].fill_null(0.0).to_numpy()
        having = np.unique(codes[values > 0]).size
        shares.append((having / players.len(), column[len(EV_PREFIX):]))
    chosen = sorted((s for s in shares if s[0] > 0 and s[0] >= min_player_share), key=lambda s: (-s[0], s[1]))
    return [name for _, name in chosen[: max(0, int(max_types))]]


def _first_seen_arrays(first_seen: pl.DataFrame | Mapping[str, dt.date] | None) -> tuple[pl.Series, np.ndarray]:
    if first_seen is None:
        return pl.Series("player_id", [], dtype=pl.String), np.empty(0, dtype=np.int64)
    if isinstance(first_seen, Mapping):
        first_seen = pl.DataFrame(
            {"player_id": list(first_seen.keys()), "first_seen": list(first_seen.values())},
            schema={"player_id": pl.String, "first_seen": pl.Date},
        )
    if "player_id" not in first_seen.columns or first_seen.width < 2:
        raise InvalidInput("first_seen needs player_id and a date column", field="first_seen")
    date_column = next(
        (c for c in ("first_seen", "first_date", "date") if c in first_seen.columns),
        next(c for c in first_seen.columns if c != "player_id"),
    )
    frame = first_seen.select(
        pl.col("player_id").cast(pl.String),
        pl.col(date_column).cast(pl.Date).alias("first_seen"),
    ).drop_nulls()
    return frame["player_id"], days_from_dates(frame["first_seen"])


@dataclass(frozen=True)
class DailyRows:
    """Canonical daily rows as arrays: what window features are computed from.

    ``codes[i]`` indexes ``players`` for row i, ``days`` are epoch-day integers, ``first_seen`` each
    player's first stored activity (epoch day, or ``int64.max`` when unknown) and ``values`` the
    numeric daily columns as float64 with NaN where a row does not know the value (SQL NULL).
    One request's rows can be built straight from a database fetch, without a Polars frame.
    """

    players: Sequence[str] | pl.Series
    codes: np.ndarray
    days: np.ndarray
    first_seen: np.ndarray
    values: Mapping[str, np.ndarray]

    @property
    def n_players(self) -> int:
        return len(self.players)


def daily_rows(daily: pl.DataFrame, first_seen: pl.DataFrame | Mapping[str, dt.date] | None = None) -> DailyRows:
    """A canonical daily frame (and optional first-seen dates) as :class:`DailyRows`."""
    if not set(DAILY_BASE_COLUMNS) <= set(daily.columns) or daily.schema.get("date") != pl.Date:
        daily = normalize_daily(daily)
    fs_players, fs_days = _first_seen_arrays(first_seen)
    n_rows = daily.height
    all_players = pl.concat([daily["player_id"].cast(pl.String), fs_players])
    if all_players.null_count():
        raise InvalidInput("daily rows or first_seen have a null player_id", field="player_id")
    codes_all, players = factorize(all_players)
    first = np.full(players.len(), np.iinfo(np.int64).max, dtype=np.int64)
    if fs_days.size:
        np.minimum.at(first, codes_all[n_rows:], fs_days)
    row_days = days_from_dates(daily["date"]) if n_rows else np.empty(0, dtype=np.int64)
    values = {
        c: daily[c].cast(pl.Float64).to_numpy()
        for c in daily.columns
        if c not in ("player_id", "date")
    }
    return DailyRows(players, codes_all[:n_rows], row_days, first, values)


def window_features(
    daily: pl.DataFrame,
    window: Window,
    *,
    first_seen: pl.DataFrame | Mapping[str, dt.date] | None = None,
    holiday_country: str | None = None,
    context: str | None = None,
    custom_types: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Per-player totals and canonical metrics of one window.

    Parameters
    ----------
    daily : pl.DataFrame
        Canonical Daily rows (``features.daily``); rows after ``window.end`` are ignored.
    window : Window
    first_seen : pl.DataFrame or mapping, optional
        ``player_id`` and a date column (``first_seen``): each player's first stored activity when
        ``daily`` does not reach back that far; combined with the first date in ``daily``.
    holiday_country : str, optional
        ISO country (``"GB"``, or ``"US-CA"`` with a subdivision) for the holiday context.
    context : {"weekday", "weekend", "holiday"}, optional
        Restrict the window to the days of that context.
    custom_types : sequence of str, optional
        Game-specific types (``ev_<type>`` columns) that get ``<type>_per_day``; default all present.

    Returns
    -------
    pl.DataFrame
        One row per known player (first activity <= ``window.end``), silent players included with
        zeros, sorted by ``player_id``: exposures, totals and metrics (``docs/ARCHITECTURE.md``).
        Metrics whose inputs no daily row knows (night playtime, start hours, social sessions of a
        daily file) are omitted.

    Notes
    -----
    Rates divide by ``max(exposure_days, MIN_RATE_EXPOSURE_DAYS)``; ratios without a denominator
    are 0. ``spend`` is net of refunds, floored at 0. A day is active when it has a session,
    playtime, a purchase, a social event or a game-specific event; ``active_day_share`` weighs
    today by its elapsed fraction. ``weekend_play_share`` is the share of playtime on days off
    (Saturday, Sunday and, with ``holiday_country``, public holidays). Optional inputs known on
    only some rows (a daily file mixed with events) are averaged over the rows that know them.
    """
    rows = daily_rows(daily, first_seen)
    keep, out = window_feature_arrays(rows, window, holiday_country=holiday_country, context=context,
                                      custom_types=custom_types)
    players = rows.players if isinstance(rows.players, pl.Series) else pl.Series(list(rows.players))
    frame: dict[str, object] = {"player_id": players.gather(keep)}
    frame.update(out)
    return pl.DataFrame(frame)


@lru_cache(maxsize=512)
def _day_table(window: Window, holiday_country: str | None, context_code: int | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day table of a window: exposure weight and context of each day, and per-context suffix sums of
    exposure (shape (3, n_days + 1)). Cached: every request of a day asks for the same windows."""
    start_day = (window.start - _EPOCH).days
    days = np.arange(start_day, start_day + window.n_days, dtype=np.int64)
    weights = window.day_weights()
    contexts = day_contexts(days, holiday_country)
    if context_code is not None:
        weights = np.where(contexts == context_code, weights, 0.0)
    per_context = np.stack([np.where(contexts == k, weights, 0.0) for k in range(3)])
    suffix = np.concatenate([np.cumsum(per_context[:, ::-1], axis=1)[:, ::-1], np.zeros((3, 1))], axis=1)
    for array in (weights, contexts, suffix):
        array.setflags(write=False)
    return weights, contexts, suffix


def window_feature_arrays(
    rows: DailyRows,
    window: Window,
    *,
    holiday_country: str | None = None,
    context: str | None = None,
    custom_types: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The array core of :func:`window_features`: ``(keep, columns)``.

    ``keep`` indexes ``rows.players`` (the players known by ``window.end``, in ``players`` order);
    every array in ``columns`` is aligned on ``keep``.
    """
    context_code = _context_code(context)
    ev_columns = [c for c in rows.values if c.startswith(EV_PREFIX)]
    if custom_types is None:
        types = sorted(c[len(EV_PREFIX):] for c in ev_columns)
    else:
        types = list(dict.fromkeys(
            t[len(EV_PREFIX):] if str(t).startswith(EV_PREFIX) else str(t) for t in custom_types))
    nb = _window_pass()
    start_day = (window.start - _EPOCH).days
    end_day = (window.end - _EPOCH).days
    n_players = rows.n_players
    weights, contexts, suffix = _day_table(window, holiday_country, context_code)
    n_types = len(types)
    # every row the pass reads, in its order: base columns, custom types, the other ev_ columns (they
    # only make a day active), the optional inputs (NaN: unknown, as an absent column)
    type_set = {EV_PREFIX + t for t in types}
    names = [*_BASE_INPUTS, *(EV_PREFIX + t for t in types), *(c for c in ev_columns if c not in type_set)]
    vals = np.empty((len(names) + 4, rows.codes.shape[0]))
    values = rows.values
    for i, name in enumerate(names):
        v = values.get(name)
        vals[i] = 0.0 if v is None else v
    for j, name in enumerate(nb.OPTIONAL_SOURCES):
        v = values.get(name)
        vals[len(names) + j] = np.nan if v is None else v
    n_out = nb.N_HEAD + 2 * n_types + nb.N_METRICS
    block = np.empty((n_out, n_players))
    opt_known = np.empty(4, dtype=np.bool_)
    first = np.array(rows.first_seen, dtype=np.int64)  # lowered in place to each player's first row
    all_known = nb.window_pass(
        np.asarray(rows.codes, dtype=np.int64), np.asarray(rows.days, dtype=np.int64), vals, first, n_players,
        start_day, end_day, weights, contexts, suffix,
        -1 if context_code is None else context_code, n_types, len(names) - len(_BASE_INPUTS),
        MIN_RATE_EXPOSURE_DAYS, block, opt_known)
    if all_known:
        keep = np.arange(n_players)
        rows_of = block  # one row per output column, aligned on keep
    else:
        keep = np.flatnonzero(first <= end_day)
        rows_of = block[:, keep]
    night, social_sessions, hour_sin, hour_cos = opt_known.tolist()
    out: dict[str, np.ndarray] = {
        "exposure_days": rows_of[nb.O_EXPOSURE],
        "active_days": rows_of[nb.O_ACTIVE_DAYS].astype(np.int64),
        "exposure_weekday": rows_of[nb.O_EXP_WEEKDAY],
        "exposure_weekend": rows_of[nb.O_EXP_WEEKEND],
        "exposure_holiday": rows_of[nb.O_EXP_HOLIDAY],
        "sessions": rows_of[nb.O_SESSIONS],
        "playtime_minutes": rows_of[nb.O_PLAYTIME],
        "purchases": rows_of[nb.O_PURCHASES],
        "net_spend": rows_of[nb.O_NET_SPEND],
        "social_events": rows_of[nb.O_SOCIAL],
    }
    if social_sessions:
        out["social_sessions"] = rows_of[nb.O_SOCIAL_SESSIONS]
    for t_i, t in enumerate(types):
        out[EV_PREFIX + t] = rows_of[nb.N_HEAD + t_i]
    m = nb.N_HEAD + n_types
    for name, row, present in (
        ("spend_per_day", nb.M_SPEND_PER_DAY, True),
        ("purchases_per_day", nb.M_PURCHASES_PER_DAY, True),
        ("avg_purchase_value", nb.M_AVG_PURCHASE_VALUE, True),
        ("has_purchase", nb.M_HAS_PURCHASE, True),
        ("sessions_per_day", nb.M_SESSIONS_PER_DAY, True),
        ("avg_session_minutes", nb.M_AVG_SESSION_MINUTES, True),
        ("active_day_share", nb.M_ACTIVE_DAY_SHARE, True),
        ("weekend_play_share", nb.M_WEEKEND_PLAY_SHARE, True),
        ("night_play_share", nb.M_NIGHT_PLAY_SHARE, night),
        ("start_hour_sin", nb.M_START_HOUR_SIN, hour_sin),
        ("start_hour_cos", nb.M_START_HOUR_COS, hour_cos),
        ("social_events_per_session", nb.M_SOCIAL_EVENTS_PER_SESSION, True),
        ("social_session_share", nb.M_SOCIAL_SESSION_SHARE, social_sessions),
    ):
        if present:
            out[name] = rows_of[m + row]
    for t_i, t in enumerate(types):
        out[custom_metric(t)] = rows_of[m + nb.N_METRICS + t_i]
    return keep, out


_BASE_INPUTS = ("sessions", "playtime_minutes", "purchases", "spend", "refunds", "social_events")
_NB_WINDOW = None


def _window_pass():
    """The compiled pass (``core._window_numba``), imported on first use (importing numba takes ~0.5 s)."""
    global _NB_WINDOW
    if _NB_WINDOW is None:
        from unified_segmentation.core import _window_numba

        _NB_WINDOW = _window_numba
    return _NB_WINDOW


__all__ = [
    "CONTEXTS",
    "DailyRows",
    "MIN_RATE_EXPOSURE_DAYS",
    "OPTIONAL_METRIC_INPUTS",
    "Window",
    "context_day_weights",
    "day_contexts",
    "holiday_dates",
    "select_custom_types",
    "daily_rows",
    "window_context",
    "window_feature_arrays",
    "window_features",
    "windows_for",
]
