"""Inputs to the pure pipeline: events or daily rows -> daily form, as_of, window features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from ..errors import InvalidInput
from ..features import events_to_daily, normalize_daily, window_features, windows_for
from ..game_settings import GameSettings

UNIVERSAL_AXES = ("monetization", "engagement", "temporal", "social")


def as_settings(settings: GameSettings | dict | None) -> GameSettings:
    if settings is None:
        return GameSettings()
    if isinstance(settings, GameSettings):
        return settings
    return GameSettings.from_dict(settings)


def to_daily(data, timezone: str) -> pl.DataFrame:
    """Events or daily rows (Polars or pandas) -> the canonical daily frame."""
    if data is None:
        raise InvalidInput("no data given")
    if not isinstance(data, pl.DataFrame):
        try:
            data = pl.from_pandas(data)
        except Exception as exc:  # noqa: BLE001 - any non-frame input
            raise InvalidInput(f"expected a Polars or pandas DataFrame, got {type(data).__name__}") from exc
    if "event_type" in data.columns:
        return events_to_daily(data, timezone=timezone)
    if "date" in data.columns:
        return data if "refunds" in data.columns else normalize_daily(data)
    raise InvalidInput("data has neither event columns (event_type, timestamp) nor daily columns (date)")


def resolve_as_of(as_of, settings: GameSettings) -> datetime:
    """``as_of`` (datetime, ISO string or None) -> aware datetime; naive means the game's time zone."""
    if as_of is None:
        as_of = settings.default_as_of
    if as_of is None:
        return datetime.now(UTC)
    if isinstance(as_of, str):
        try:
            as_of = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"as_of: not an ISO-8601 time: {as_of!r}", field="as_of") from exc
    if not isinstance(as_of, datetime):
        raise InvalidInput("as_of: expected a datetime or ISO-8601 string", field="as_of")
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=ZoneInfo(settings.timezone))
    return as_of


def first_seen(daily: pl.DataFrame) -> pl.DataFrame:
    return daily.group_by("player_id").agg(pl.col("date").min().alias("first_date"))


@dataclass
class GameWindows:
    """Window features of every known player, for one as_of (and optionally the null run)."""

    profile: pl.DataFrame
    current: pl.DataFrame
    typical: pl.DataFrame


def compute_windows(daily: pl.DataFrame, as_of: datetime, settings: GameSettings, *,
                    custom_types: list[str] | None, first: pl.DataFrame | None = None,
                    shift_days: int = 0, which=("profile", "current", "typical")) -> dict[str, pl.DataFrame]:
    first = first_seen(daily) if first is None else first
    wins = windows_for(as_of, timezone=settings.timezone, profile_days=settings.profile_days,
                       current_days=settings.current_days, typical_days=settings.typical_days,
                       shift_days=shift_days)
    out = {}
    for name in which:
        out[name] = window_features(daily, wins[name], first_seen=first,
                                    holiday_country=settings.holiday_country,
                                    custom_types=custom_types).sort("player_id")
    return out


class ArrayFrame:
    """Window features as numpy columns: the frame one request scores, without building a Polars frame.

    It answers the few questions the scoring code asks of a features frame: ``columns``, ``height``,
    ``frame[name]`` (``player_id`` gives a list). :func:`column` reads it through
    a per-frame cache of float64 columns with NaN as 0.
    """

    __slots__ = ("_clean", "_columns", "_data", "_ids")

    def __init__(self, player_ids: list[str], data: dict[str, np.ndarray]) -> None:
        self._ids = list(player_ids)
        self._data = data
        self._columns = ["player_id", *data]
        self._clean: dict[str, np.ndarray] = {}

    @property
    def columns(self) -> list[str]:
        return self._columns

    @property
    def height(self) -> int:
        return len(self._ids)

    def __getitem__(self, name: str):
        if name == "player_id":
            return _Ids(self._ids)
        return self._data[name]

    def clean(self, name: str) -> np.ndarray:
        """Column ``name`` as float64 with NaN as 0 (zeros when absent), converted once."""
        out = self._clean.get(name)
        if out is None:
            values = self._data.get(name)
            if values is None:
                out = np.zeros(len(self._ids))
            else:
                out = np.asarray(values, dtype=np.float64)
                if np.isnan(out).any():
                    out = np.nan_to_num(out, nan=0.0, posinf=np.inf, neginf=-np.inf)  # element by element
            self._clean[name] = out
        return out


    def row(self, i: int) -> dict[str, float]:
        """Row ``i`` as floats, NaN as 0 (what :meth:`clean` gives element ``i`` of each column)."""
        out = {}
        for name, values in self._data.items():
            v = float(values[i])
            out[name] = v if v == v else 0.0
        return out


def row_values(frame, i: int = 0) -> dict[str, float]:
    """Row ``i`` of a features frame (Polars or :class:`ArrayFrame`) as floats, as :func:`column` reads
    them (absent columns are not keys: read them as 0)."""
    if isinstance(frame, ArrayFrame):
        return frame.row(i)
    return {name: float(column(frame, name)[i]) for name in frame.columns if name != "player_id"}


class _Ids(list):
    def to_list(self) -> list[str]:
        return list(self)


def column(frame, name: str) -> np.ndarray:
    """One column of a features frame (Polars or :class:`ArrayFrame`) as float64; absent or null -> 0."""
    if isinstance(frame, ArrayFrame):
        return frame.clean(name)
    if name not in frame.columns:
        return np.zeros(frame.height)
    values = np.asarray(frame.get_column(name).to_numpy(), dtype=np.float64)
    # NaN -> 0 element by element (infinities stay: a row's value never depends on the other rows)
    return np.nan_to_num(values, nan=0.0, posinf=np.inf, neginf=-np.inf) if np.isnan(values).any() else values


def matrix(frame, columns: list[str]) -> np.ndarray:
    """Columns of a features frame as a float64 array of shape (n, len(columns)); absent -> 0."""
    if not columns:
        return np.zeros((frame.height, 0))
    if isinstance(frame, ArrayFrame):
        return np.stack([column(frame, c) for c in columns], axis=1)
    cols = [pl.col(c).cast(pl.Float64).fill_null(0.0) if c in frame.columns else pl.lit(0.0).alias(c)
            for c in columns]
    return frame.select(cols).to_numpy().astype(np.float64, copy=False)


def align(frame: pl.DataFrame, player_ids: pl.Series) -> pl.DataFrame:
    """Rows of ``frame`` in the order of ``player_ids`` (missing players get nulls)."""
    return pl.DataFrame({"player_id": player_ids}).join(frame, on="player_id", how="left",
                                                        maintain_order="left")
