"""The seeded planted-game generator.

One synthetic population serves the tests, the demo and the benchmarks (in the spirit of PyOD's
``generate_data``): players get independent planted tiers on the four universal axes (monetization,
engagement, temporal, social), a game-specific play style, outcomes tied to the tiers and, for a few of
them, an anomaly planted in the current window. The defaults of :class:`PlantedSpec` are the planted game
of ``TARGETS.md`` ("Accuracy — on planted truth").

Everything is vectorized with numpy over players, player-days, sessions and events; the only Python
loop is over chunks of :data:`CHUNK_PLAYERS` players. Randomness comes from one
``np.random.default_rng(seed)``: the population is drawn from it directly, and each chunk of players
draws from its own child streams spawned from it (``Generator.spawn``). The *shared* child stream holds
everything both output paths need (session counts, start hours, lengths, social counts, purchase counts
and values, game-specific counts), the *events* child stream only the placement of events inside
sessions. Hence :func:`generate_game` and :func:`generate_daily` of the same spec plant the same
population with identical truth and outcomes, and the daily rows equal the roll-up of the events except
for the few events that cross local midnight (or fall after ``as_of``, which are dropped). Chunks may run
on two threads (numpy's generators release the GIL); the output does not depend on it.

How a day is simulated: a player's sessions on local day ``d`` are Poisson with mean
``true_sessions_rate * (weekday or weekend factor of the temporal tier)`` (``x 0.1`` in the current
window for ``engagement_drop``); start hours are normal around the temporal tier's hour (``+ 8 h`` in
the current window for ``schedule_shift``), wrapped into the same local day; lengths are log-normal.
On active days, purchases are Poisson per day (``x 5`` for ``spend_spike``), social events Poisson per
session (``x 4`` for ``social_burst``), ``build``/``raid``/``quest`` Poisson per session; each such event
is placed uniformly inside one of that day's sessions. A session running at ``as_of`` is cut there.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from unified_segmentation.errors import InvalidInput
from unified_segmentation.features.daily import DAILY_BASE_COLUMNS

__all__ = [
    "ANOMALY_KINDS",
    "CHUNK_PLAYERS",
    "CUSTOM_EVENT_TYPES",
    "DAILY_SCHEMA",
    "ENGAGEMENT_TIERS",
    "EVENTS_SCHEMA",
    "EVENT_TYPES",
    "MONETIZATION_TIERS",
    "OUTCOMES_SCHEMA",
    "PLAY_STYLES",
    "SOCIAL_TIERS",
    "TEMPORAL_TIERS",
    "TEST_PLAYER",
    "PlantedSpec",
    "SyntheticGame",
    "generate_daily",
    "generate_game",
]

MONETIZATION_TIERS: tuple[str, ...] = ("non_payer", "minnow", "dolphin", "whale")
ENGAGEMENT_TIERS: tuple[str, ...] = ("casual", "regular", "hardcore")
TEMPORAL_TIERS: tuple[str, ...] = ("weekday_evening", "weekend", "night")
SOCIAL_TIERS: tuple[str, ...] = ("solo", "social", "guild")
PLAY_STYLES: tuple[str, ...] = ("builder", "raider")
ANOMALY_KINDS: tuple[str, ...] = ("spend_spike", "engagement_drop", "schedule_shift", "social_burst")
#: Event types in the order of their integer codes; the last three are the game-specific (custom) ones.
EVENT_TYPES: tuple[str, ...] = ("session", "purchase", "refund", "social", "build", "raid", "quest")
CUSTOM_EVENT_TYPES: tuple[str, ...] = EVENT_TYPES[4:]
#: Player 0 is renamed so that the demo always has it: a steady regular minnow, social, weekday evenings.
TEST_PLAYER = "test_player"
#: Players are simulated in chunks of this size (fixed: the random streams depend on it).
CHUNK_PLAYERS = 50_000
_MAX_THREADS = 2

DEFAULT_AS_OF = (2026, 3, 2, 12, 0)  # a Monday noon, local time of the spec's timezone

# Constants of the planted game that the spec does not expose.
_VALUE_SIGMA = 1.0  # log-normal sigma of purchase values
_MINUTES_SIGMA = 0.6  # log-normal sigma of session minutes
#: Expected share of a tier's sessions that fall on Saturday/Sunday (the rate stays the tier's on average).
_WEEKEND_SHARE = (0.15, 0.75, 2.0 / 7.0)
#: (mean, sd) of the local start hour per temporal tier, wrapped modulo 24.
_START_HOUR = ((20.0, 1.2), (14.0, 3.0), (1.0, 1.2))
_REFUND_SHARE = 0.02  # of payers' purchases
_REFUND_DELAY_S = (60.0, 3600.0)  # a refund follows its purchase after U(1 min, 1 h)
#: (build, raid) events per session for builder / raider players; quests per session for everyone.
_STYLE_RATES = ((3.0, 0.3), (0.3, 3.0))
_QUEST_PER_SESSION = 0.5
#: Multiplier of the affected rate in the current window, and start-hour shift, per anomaly kind.
_ANOMALY_FACTOR = {"spend_spike": 5.0, "engagement_drop": 0.1, "schedule_shift": 1.0, "social_burst": 4.0}
_SHIFT_HOURS = 8.0
_MIN_TYPICAL_DAYS = 7
#: Outcomes: churn probability per engagement tier, times a monetization factor; ticket means.
_CHURN_P = (0.35, 0.15, 0.05)
_CHURN_MON_FACTOR = (1.0, 1.0, 0.8, 0.5)
_TICKETS_BASE = 0.2
_TICKETS_ENG_FACTOR = (1.0, 1.5, 3.0)
_TICKETS_MON_FACTOR = (1.0, 1.2, 2.0, 4.0)
_LTV_FACTOR = 1.3
_LTV_SIGMA = 0.25  # multiplicative (mean-one log-normal) noise of LTV
_LTV_ABS_NOISE = 0.25  # additive normal noise, then clipped at 0
# test_player's tiers: minnow, regular, weekday_evening, social, builder.
_TEST_TIERS = {"mon": 1, "eng": 1, "tem": 0, "soc": 1, "style": 0}

_US_PER_S = 1_000_000
_US_PER_HOUR = 3_600 * _US_PER_S
_US_PER_DAY = 24 * _US_PER_HOUR
_EPOCH = date(1970, 1, 1)
_EVENT_ID_BASE = 10**11  # event ids are str(_EVENT_ID_BASE + i): 12 digits, unique within a game
_PROPERTIES = (None, '{"kind": "guild"}', '{"kind": "chat"}')

EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Utf8(),
    "player_id": pl.Utf8(),
    "event_type": pl.Utf8(),
    "timestamp": pl.Datetime("us", "UTC"),
    "value": pl.Float64(),
    "properties": pl.Utf8(),
}
_DAILY_FLOATS = (*DAILY_BASE_COLUMNS[2:], *(f"ev_{t}" for t in CUSTOM_EVENT_TYPES))
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.Utf8(),
    "date": pl.Date(),
    **{c: pl.Float64() for c in _DAILY_FLOATS},
}
OUTCOMES_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.Utf8(),
    "ltv": pl.Float64(),
    "churned": pl.Int8(),
    "support_tickets": pl.Float64(),
}


# --------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class PlantedSpec:
    """Parameters of a planted game; the defaults are the planted game of ``TARGETS.md``.

    Tier tuples are ordered as :data:`MONETIZATION_TIERS`, :data:`ENGAGEMENT_TIERS`,
    :data:`TEMPORAL_TIERS` and :data:`SOCIAL_TIERS`. Shares are realised exactly (largest remainder, then
    a random permutation), so a population of ``n_players`` has ``round(share * n_players)`` players per
    tier up to one.

    Parameters
    ----------
    n_players : int
        Number of players; ids ``p000000``, ``p000001``, ... with player 0 renamed ``test_player``.
    seed : int
        Seed of the one ``np.random.default_rng(seed)`` everything is drawn from.
    payer_shares : tuple of 4 float
        Shares of non_payer, minnow, dolphin, whale.
    purchases_per_active_day : tuple of 4 float
        Poisson mean of purchases per active day, per monetization tier.
    purchase_value_median : tuple of 4 float
        Median purchase value (log-normal, sigma 1.0), per monetization tier.
    engagement_shares : tuple of 3 float
        Shares of casual, regular, hardcore.
    sessions_per_day : tuple of 3 float
        Poisson mean of sessions per day, per engagement tier (times a per-player mean-one log-normal
        jitter of sigma ``rate_jitter``).
    session_minutes_median : tuple of 3 float
        Median session length in minutes (log-normal, sigma 0.6), per engagement tier.
    temporal_shares : tuple of 3 float
        Shares of weekday_evening, weekend, night players (in the game's time zone).
    social_shares : tuple of 3 float
        Shares of solo, social, guild players.
    social_per_session : tuple of 3 float
        Poisson mean of social events per session, per social tier.
    anomaly_share : float
        Share of players with a planted anomaly, split evenly among :data:`ANOMALY_KINDS`.
    history_days : int
        Local days of history up to and including the day of ``as_of``.
    timezone : str
        IANA time zone defining local days, weekends and start hours.
    as_of : datetime or None
        End of the data. Aware, or naive meaning local time of ``timezone``; ``None`` means
        2026-03-02T12:00 local (a Monday noon), so the default game is deterministic.
    current_days, typical_days : int
        Lengths of the current window (where anomalies are planted) and of the typical window before it.
    installed_share : float
        Share of players who installed recently: their first day is uniform among the ``install_days``
        local days before the day of ``as_of`` (so the install session always precedes ``as_of``), and it
        always has a session. Everyone else exists from the first day of history.
    install_days : int
        Span of recent install days.
    rate_jitter : float
        Sigma of the per-player mean-one log-normal multiplier of the session, purchase and social rates.
    """

    n_players: int = 5000
    seed: int = 0
    payer_shares: tuple[float, ...] = (0.88, 0.08, 0.03, 0.01)
    purchases_per_active_day: tuple[float, ...] = (0.0, 0.15, 0.4, 1.0)
    purchase_value_median: tuple[float, ...] = (0.0, 2.0, 15.0, 80.0)
    engagement_shares: tuple[float, ...] = (0.50, 0.35, 0.15)
    sessions_per_day: tuple[float, ...] = (0.4, 1.5, 4.0)
    session_minutes_median: tuple[float, ...] = (8.0, 18.0, 35.0)
    temporal_shares: tuple[float, ...] = (0.60, 0.25, 0.15)
    social_shares: tuple[float, ...] = (0.50, 0.35, 0.15)
    social_per_session: tuple[float, ...] = (0.05, 1.0, 4.0)
    anomaly_share: float = 0.03
    history_days: int = 70
    timezone: str = "UTC"
    as_of: datetime | None = None
    current_days: int = 7
    typical_days: int = 28
    installed_share: float = 0.10
    install_days: int = 40
    rate_jitter: float = 0.15

    def __post_init__(self) -> None:
        tuples = {
            "payer_shares": 4,
            "purchases_per_active_day": 4,
            "purchase_value_median": 4,
            "engagement_shares": 3,
            "sessions_per_day": 3,
            "session_minutes_median": 3,
            "temporal_shares": 3,
            "social_shares": 3,
            "social_per_session": 3,
        }
        for name, length in tuples.items():
            raw = getattr(self, name)
            try:
                values = tuple(float(v) for v in raw)
            except (TypeError, ValueError):
                raise InvalidInput(f"{name} must be a sequence of {length} numbers", field=name) from None
            if len(values) != length:
                raise InvalidInput(f"{name} must have {length} entries, got {len(values)}", field=name)
            if not all(math.isfinite(v) and v >= 0 for v in values):
                raise InvalidInput(f"{name} must be finite and >= 0", field=name)
            if name.endswith("_shares") and abs(sum(values) - 1.0) > 1e-6:
                raise InvalidInput(f"{name} must sum to 1, got {sum(values):.6g}", field=name)
            object.__setattr__(self, name, values)
        if self.purchase_value_median[0] != 0.0 or self.purchases_per_active_day[0] != 0.0:
            raise InvalidInput("non_payers (first monetization tier) must have no purchases", field="payer_shares")
        for name in ("n_players", "history_days", "current_days", "typical_days", "install_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}", field=name)
            object.__setattr__(self, name, int(value))
        if self.history_days < self.current_days + self.typical_days:
            raise InvalidInput("history_days must be >= current_days + typical_days", field="history_days")
        for name in ("anomaly_share", "installed_share"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"{name} must be within [0, 1], got {value}", field=name)
            object.__setattr__(self, name, value)
        if not (math.isfinite(self.rate_jitter) and self.rate_jitter >= 0):
            raise InvalidInput("rate_jitter must be finite and >= 0", field="rate_jitter")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidInput(f"unknown time zone {self.timezone!r}", field="timezone") from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise InvalidInput(f"seed must be an integer >= 0, got {self.seed!r}", field="seed")
        object.__setattr__(self, "seed", int(self.seed))
        if self.as_of is not None and not isinstance(self.as_of, datetime):
            raise InvalidInput("as_of must be a datetime or None", field="as_of")

    def resolved_as_of(self) -> datetime:
        """``as_of`` as an aware datetime in the spec's time zone (the fixed default when unset)."""
        tz = ZoneInfo(self.timezone)
        if self.as_of is None:
            return datetime(*DEFAULT_AS_OF, tzinfo=tz)
        if self.as_of.tzinfo is None or self.as_of.utcoffset() is None:
            return self.as_of.replace(tzinfo=tz)
        return self.as_of.astimezone(tz)


# --------------------------------------------------------------------------------------------- result
@dataclass
class SyntheticGame:
    """A generated planted game.

    Attributes
    ----------
    spec : PlantedSpec
        The spec it was generated from.
    as_of : datetime
        Aware end of the data, in the spec's time zone; no event is later.
    events : polars.DataFrame or None
        Canonical Events frame (``event_id, player_id, event_type, timestamp, value, properties``);
        ``None`` for :func:`generate_daily`.
    daily : polars.DataFrame or None
        Canonical Daily frame (one row per active local player-day); only from :func:`generate_daily`.
    outcomes : polars.DataFrame
        ``player_id, ltv, churned, support_tickets``.
    truth : polars.DataFrame
        One row per player: ``player_id``, the planted tiers ``monetization``, ``engagement``,
        ``temporal``, ``social``, ``play_style``; ``first_day`` (local Date), ``installed``,
        ``typical_exposure_days``; ``anomaly`` (kind or null), ``anomaly_factor`` (multiplier of the
        affected rate in the current window, 1.0 when none) and ``anomaly_shift_hours``; and the true
        rates used to generate: ``true_sessions_rate`` (per day, averaged over the week),
        ``true_weekday_factor`` / ``true_weekend_factor`` (its multipliers on weekdays / Sat-Sun),
        ``true_session_minutes_median``, ``true_start_hour`` / ``true_start_hour_sd`` (local),
        ``true_purchase_rate`` (per active day), ``true_purchase_value_median``,
        ``true_social_per_session`` and ``true_build|raid|quest_per_session``.
    windows : dict of str to (date, date)
        Inclusive local dates of the ``"current"`` window (where anomalies are planted; its last day is
        only exposed up to ``as_of``) and of the ``"typical"`` window before it.
    """

    spec: PlantedSpec
    as_of: datetime
    events: pl.DataFrame | None
    daily: pl.DataFrame | None
    outcomes: pl.DataFrame
    truth: pl.DataFrame
    windows: dict[str, tuple[date, date]] = field(default_factory=dict)

    def write(self, directory: str | Path, fmt: str = "csv") -> dict[str, Path]:
        """Write the frames to ``directory`` as ``<name>.csv`` or ``<name>.parquet``.

        Parameters
        ----------
        directory : str or Path
            Created if missing.
        fmt : {"csv", "parquet"}
            File format.

        Returns
        -------
        dict of str to Path
            ``{"events"|"daily"|"outcomes"|"truth": path}`` for every frame that exists.
        """
        if fmt not in ("csv", "parquet"):
            raise InvalidInput(f"fmt must be 'csv' or 'parquet', got {fmt!r}", field="fmt")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        frames = {"events": self.events, "daily": self.daily, "outcomes": self.outcomes, "truth": self.truth}
        for name, frame in frames.items():
            if frame is None:
                continue
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                frame.write_csv(path)
            else:
                frame.write_parquet(path)
            paths[name] = path
        return paths

    @staticmethod
    def schema(name: str) -> dict[str, pl.DataType]:
        """Schema of frame ``name`` (``events``, ``daily``, ``outcomes``), e.g. to read a CSV back."""
        return {"events": EVENTS_SCHEMA, "daily": DAILY_SCHEMA, "outcomes": OUTCOMES_SCHEMA}[name]


# --------------------------------------------------------------------------------------------- public
def generate_game(spec: PlantedSpec | None = None, **overrides: Any) -> SyntheticGame:
    """Generate a planted game as raw events.

    Parameters
    ----------
    spec : PlantedSpec, optional
        Defaults to ``PlantedSpec()``.
    **overrides
        Fields of :class:`PlantedSpec` replacing those of ``spec`` (e.g. ``n_players=50_000, seed=3``).

    Returns
    -------
    SyntheticGame
        With ``events`` (canonical Events frame), ``outcomes`` and ``truth``; ``daily`` is ``None``.

    Notes
    -----
    Rows are grouped by event type (``session``, ``purchase``, ``refund``, ``social``, ``build``,
    ``raid``, ``quest``), each in player order; they are not sorted by time. ``event_id`` is
    ``str(10**11 + row)``: 12 digits, unique within the game and equal for equal specs (re-ingesting the
    same game is a no-op). ``value`` is the session length in seconds, the purchase or refunded amount,
    and null for the other types; ``properties`` is ``{"kind": "guild"}`` / ``{"kind": "chat"}`` on
    social events and null otherwise.

    Volume is about 500 events per player for the default spec (70 days, mostly game-specific
    ``build``/``raid`` events): 50k players make ~25M events (~1 GB); use :func:`generate_daily`
    beyond that.
    """
    return _generate(_resolve(spec, overrides), events=True)


def generate_daily(spec: PlantedSpec | None = None, **overrides: Any) -> SyntheticGame:
    """Generate the same planted game as :func:`generate_game`, rolled up directly as daily rows.

    Parameters
    ----------
    spec : PlantedSpec, optional
        Defaults to ``PlantedSpec()``.
    **overrides
        Fields of :class:`PlantedSpec` replacing those of ``spec``.

    Returns
    -------
    SyntheticGame
        With ``daily`` (canonical Daily frame, one row per player and active local day), ``outcomes``
        and ``truth`` identical to :func:`generate_game` of the same spec; ``events`` is ``None``.

    Notes
    -----
    The fast path shares the session and count draws with :func:`generate_game`, so ``sessions``,
    ``playtime_minutes``, ``night_playtime_minutes`` and the per-day counts equal the events' roll-up
    except where an event inside a session falls on the next local day (or after ``as_of``); refunds are
    counted on their purchase's day, and the start-hour sine/cosine sums use float32 sines (~1e-7).
    Columns: ``player_id, date, sessions, playtime_minutes, night_playtime_minutes, purchases, spend,
    refunds, social_events, social_sessions, start_hour_sin_sum, start_hour_cos_sum, ev_build, ev_raid,
    ev_quest`` (all Float64 but the first two). 1M players (~41M rows, ~5 GB) take about 20-40 s here.
    """
    return _generate(_resolve(spec, overrides), events=False)


def _resolve(spec: PlantedSpec | None, overrides: dict[str, Any]) -> PlantedSpec:
    spec = spec if spec is not None else PlantedSpec()
    if not isinstance(spec, PlantedSpec):
        raise InvalidInput("spec must be a PlantedSpec", field="spec")
    if overrides:
        names = {f.name for f in dataclasses.fields(PlantedSpec)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InvalidInput(f"unknown PlantedSpec field(s): {', '.join(unknown)}", field=unknown[0])
        spec = dataclasses.replace(spec, **overrides)
    return spec


# --------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class _Grid:
    """The local day grid: day ``k`` is local date ``first_date + k``; the last day holds ``as_of``."""

    n_days: int
    first_date: date
    day_start_us: np.ndarray  # (n_days,) naive local epoch microseconds of each local midnight
    is_weekend: np.ndarray  # (n_days,) bool
    current_start: int  # first day index of the current window
    typical_start: int  # first day index of the typical window
    as_of_local_us: int  # naive local epoch microseconds of as_of
    as_of_utc_us: int
    last_day_fraction: float  # exposure of the as_of day


def _make_grid(spec: PlantedSpec, as_of: datetime) -> _Grid:
    local = as_of.replace(tzinfo=None)
    last = local.date()
    first = last - timedelta(days=spec.history_days - 1)
    days = np.arange(spec.history_days)
    start_us = ((first - _EPOCH).days + days).astype(np.int64) * _US_PER_DAY
    # 1970-01-01 is a Thursday (weekday 3): Saturday/Sunday are weekdays 5 and 6.
    weekday = ((first - _EPOCH).days + days + 3) % 7
    as_of_local_us = (local - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    as_of_utc_us = (as_of - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))) // timedelta(microseconds=1)
    current_start = spec.history_days - spec.current_days
    return _Grid(
        n_days=spec.history_days,
        first_date=first,
        day_start_us=start_us,
        is_weekend=weekday >= 5,
        current_start=current_start,
        typical_start=current_start - spec.typical_days,
        as_of_local_us=int(as_of_local_us),
        as_of_utc_us=int(as_of_utc_us),
        last_day_fraction=(as_of_local_us - int(start_us[-1])) / _US_PER_DAY,
    )


# --------------------------------------------------------------------------------------------- population
@dataclass
class _Population:
    """Per-player planted state, arrays of shape (n_players,)."""

    mon: np.ndarray
    eng: np.ndarray
    tem: np.ndarray
    soc: np.ndarray
    style: np.ndarray
    first_idx: np.ndarray  # first local day index (0 = first day of history)
    installed: np.ndarray  # bool: a recent install, whose first day always has a session
    anomaly: np.ndarray  # int8 index into ANOMALY_KINDS, -1 for none
    sess_rate: np.ndarray  # mean sessions per day (before the weekday/weekend modulation)
    purch_rate: np.ndarray  # mean purchases per active day
    social_rate: np.ndarray  # mean social events per session
    churned: np.ndarray
    tickets: np.ndarray
    ltv_mult: np.ndarray
    ltv_abs: np.ndarray


def _exact_labels(rng: np.random.Generator, n: int, shares: Sequence[float], fixed: int | None) -> np.ndarray:
    """Labels with exactly the largest-remainder counts of ``shares``, randomly permuted.

    Player 0 gets label ``fixed`` (if given) and the other players share the remaining counts.
    """
    shares_arr = np.asarray(shares, dtype=np.float64)
    raw = shares_arr * n
    counts = np.floor(raw).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:rest]] += 1
    if fixed is None or n == 0:
        return rng.permutation(np.repeat(np.arange(len(shares_arr)), counts)).astype(np.int8)
    counts[fixed if counts[fixed] > 0 else int(np.argmax(counts))] -= 1
    others = rng.permutation(np.repeat(np.arange(len(shares_arr)), counts))
    return np.concatenate([[fixed], others]).astype(np.int8)


def _mean_one_lognormal(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    return np.exp(sigma * rng.standard_normal(n) - 0.5 * sigma * sigma)


def _even_split(total: int, k: int) -> np.ndarray:
    counts = np.full(k, total // k, dtype=np.int64)
    counts[: total - int(counts.sum())] += 1
    return counts


def _plant_population(spec: PlantedSpec, grid: _Grid, rng: np.random.Generator) -> _Population:
    n = spec.n_players
    t = _TEST_TIERS
    mon = _exact_labels(rng, n, spec.payer_shares, t["mon"])
    eng = _exact_labels(rng, n, spec.engagement_shares, t["eng"])
    tem = _exact_labels(rng, n, spec.temporal_shares, t["tem"])
    soc = _exact_labels(rng, n, spec.social_shares, t["soc"])
    style = _exact_labels(rng, n, (0.5, 0.5), t["style"])

    # Recent installs (never test_player): first day uniform among the `install_days` days before D.
    n_inst = min(round(spec.installed_share * n), max(n - 1, 0))
    installed = np.zeros(n, dtype=bool)
    inst_idx = rng.choice(np.arange(1, n), size=n_inst, replace=False) if n_inst else np.empty(0, np.int64)
    installed[inst_idx] = True
    first_idx = np.zeros(n, dtype=np.int64)
    span = min(spec.install_days, grid.n_days - 1)
    first_idx[inst_idx] = grid.n_days - 1 - rng.integers(1, span + 1, size=n_inst)

    jitter = [_mean_one_lognormal(rng, spec.rate_jitter, n) for _ in range(3)]
    if n:
        for j in jitter:
            j[0] = 1.0  # test_player is steady
    sess_rate = np.asarray(spec.sessions_per_day)[eng] * jitter[0]
    purch_rate = np.asarray(spec.purchases_per_active_day)[mon] * jitter[1]
    social_rate = np.asarray(spec.social_per_session)[soc] * jitter[2]

    # Anomalies: only on players with >= 7 days of exposure in the typical window, never test_player.
    typical_exposure = _typical_exposure(first_idx, grid)
    eligible = typical_exposure >= _MIN_TYPICAL_DAYS
    if n:
        eligible[0] = False
    pools = {
        "spend_spike": eligible & (mon > 0),
        "engagement_drop": eligible & (eng > 0),
        "schedule_shift": eligible.copy(),
        "social_burst": eligible & (soc > 0),
    }
    per_kind = dict(zip(ANOMALY_KINDS, _even_split(round(spec.anomaly_share * n), 4), strict=True))
    anomaly = np.full(n, -1, dtype=np.int8)
    # Smallest pools first so that the broad kinds do not use up the payers.
    for kind in ("spend_spike", "social_burst", "engagement_drop", "schedule_shift"):
        pool = np.flatnonzero(pools[kind] & (anomaly < 0))
        size = min(int(per_kind[kind]), len(pool))
        if size:
            anomaly[rng.choice(pool, size=size, replace=False)] = ANOMALY_KINDS.index(kind)

    churn_p = np.asarray(_CHURN_P)[eng] * np.asarray(_CHURN_MON_FACTOR)[mon]
    churned = (rng.random(n) < churn_p).astype(np.int8)
    tickets_mean = _TICKETS_BASE * np.asarray(_TICKETS_ENG_FACTOR)[eng] * np.asarray(_TICKETS_MON_FACTOR)[mon]
    tickets = rng.poisson(tickets_mean).astype(np.float64)
    ltv_mult = _mean_one_lognormal(rng, _LTV_SIGMA, n)
    ltv_abs = _LTV_ABS_NOISE * rng.standard_normal(n)
    return _Population(
        mon=mon,
        eng=eng,
        tem=tem,
        soc=soc,
        style=style,
        first_idx=first_idx,
        installed=installed,
        anomaly=anomaly,
        sess_rate=sess_rate,
        purch_rate=purch_rate,
        social_rate=social_rate,
        churned=churned,
        tickets=tickets,
        ltv_mult=ltv_mult,
        ltv_abs=ltv_abs,
    )


def _typical_exposure(first_idx: np.ndarray, grid: _Grid) -> np.ndarray:
    start = np.maximum(first_idx, grid.typical_start)
    return np.clip(grid.current_start - start, 0, grid.current_start - grid.typical_start)


def _day_factors() -> np.ndarray:
    """(3, 2) multipliers of the session rate per temporal tier on weekdays / weekend days."""
    share = np.asarray(_WEEKEND_SHARE)
    return np.stack([(1.0 - share) / (5.0 / 7.0), share / (2.0 / 7.0)], axis=1)


# --------------------------------------------------------------------------------------------- chunks
@dataclass
class _Chunk:
    """Shared draws of one chunk of players (no input validation; internal).

    Sessions are ordered by (player, day); ``cell`` indexes active player-days of the chunk.
    """

    lo: int
    n_days: int
    # per session, shape (n_sessions,)
    sess_cell: np.ndarray  # index into the active cells
    start_us: np.ndarray  # naive local epoch microseconds
    hour: np.ndarray  # fractional local start hour
    length_s: np.ndarray
    social_n: np.ndarray
    # per active player-day, shape (n_cells,)
    cell_player: np.ndarray  # index within the chunk
    cell_day: np.ndarray
    cell_sessions: np.ndarray
    cell_first: np.ndarray  # index of the cell's first session
    purchases: np.ndarray
    custom: list[np.ndarray]  # counts of build, raid, quest per cell
    # per purchase, ordered by cell
    purchase_cell: np.ndarray
    purchase_value: np.ndarray
    refunded: np.ndarray


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, stop)`` for each pair, vectorized."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shifts = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return shifts + np.arange(total)


def _simulate_chunk(
    spec: PlantedSpec, pop: _Population, grid: _Grid, lo: int, hi: int, rng: np.random.Generator
) -> _Chunk:
    """Draw sessions and event counts of players ``lo:hi`` (no input validation).

    Anomalies touch few players, so their sessions and days are found as index ranges (sessions are in
    (player, day) order) instead of masks over all sessions.
    """
    m, n_days, cur = hi - lo, grid.n_days, grid.current_start
    sl = slice(lo, hi)
    kind = pop.anomaly[sl]

    def players(name: str) -> np.ndarray:
        return np.flatnonzero(kind == ANOMALY_KINDS.index(name))

    # Session counts per player-day, shape (m, n_days).
    rate = _day_factors()[:, grid.is_weekend.astype(np.intp)][pop.tem[sl]]
    rate *= pop.sess_rate[sl, None]
    rate[players("engagement_drop"), cur:] *= _ANOMALY_FACTOR["engagement_drop"]
    inst = np.flatnonzero(pop.installed[sl])
    inst_first = pop.first_idx[sl][inst]
    rate[inst] *= np.arange(n_days)[None, :] >= inst_first[:, None]
    counts = rng.poisson(rate)
    counts[inst, inst_first] = np.maximum(counts[inst, inst_first], 1)

    # Sessions, in (player, day) order: start hours, then the cut at as_of.
    sess_pd = np.repeat(np.arange(m * n_days, dtype=np.int32), counts.ravel())
    sess_player = sess_pd // n_days
    sess_day = sess_pd - sess_player * n_days
    hour = np.asarray([s for _, s in _START_HOUR])[pop.tem[sl]][sess_player]
    hour *= rng.standard_normal(len(sess_pd))
    hour += np.asarray([h for h, _ in _START_HOUR])[pop.tem[sl]][sess_player]
    cell_start = np.concatenate([[0], np.cumsum(counts.ravel())])

    def current_sessions(name: str) -> np.ndarray:
        p = players(name) * n_days
        return _ranges(cell_start[p + cur], cell_start[p + n_days])

    hour[current_sessions("schedule_shift")] += _SHIFT_HOURS
    hour -= 24.0 * np.floor(hour * (1.0 / 24.0))
    start_us = grid.day_start_us[sess_day] + (hour * _US_PER_HOUR).astype(np.int64)
    keep = start_us <= grid.as_of_local_us  # nothing starts after as_of
    if not keep.all():
        sess_pd, sess_player, hour, start_us = sess_pd[keep], sess_player[keep], hour[keep], start_us[keep]
        counts_flat = np.bincount(sess_pd, minlength=m * n_days)
        cell_start = np.concatenate([[0], np.cumsum(counts_flat)])
    else:
        counts_flat = counts.ravel()
    n_sess = len(sess_pd)

    # Lengths in whole microseconds; a session still running at as_of is cut there.
    length_s = (np.asarray(spec.session_minutes_median) * 60.0)[pop.eng[sl]][sess_player]
    length_s *= np.exp(_MINUTES_SIGMA * rng.standard_normal(n_sess))
    np.minimum(length_s, (grid.as_of_local_us - start_us) / _US_PER_S, out=length_s)
    length_s = np.floor(length_s * _US_PER_S) / _US_PER_S

    # Social events per session.
    social_lam = pop.social_rate[sl][sess_player]
    social_lam[current_sessions("social_burst")] *= _ANOMALY_FACTOR["social_burst"]
    social_n = rng.poisson(social_lam)

    # Active player-days.
    cell_pd = np.flatnonzero(counts_flat)
    cell_sessions = counts_flat[cell_pd]
    cell_first = cell_start[cell_pd].astype(np.int32)
    n_cells = len(cell_pd)
    sess_cell = np.repeat(np.arange(n_cells, dtype=np.int32), cell_sessions)
    cell_player = (cell_pd // n_days).astype(np.int32)
    cell_day = (cell_pd - cell_player * n_days).astype(np.int32)

    # Purchases per active day (payers' days only), and game-specific counts per day.
    purch_lam = pop.purch_rate[sl][cell_player]
    spike_cells = np.flatnonzero(np.isin(cell_player, players("spend_spike")) & (cell_day >= cur))
    purch_lam[spike_cells] *= _ANOMALY_FACTOR["spend_spike"]
    paying = np.flatnonzero(purch_lam > 0)
    purchases = np.zeros(n_cells, dtype=np.int64)
    purchases[paying] = rng.poisson(purch_lam[paying])
    builder = pop.style[sl][cell_player] == 0
    custom = [
        rng.poisson(np.where(builder, _STYLE_RATES[0][0], _STYLE_RATES[1][0]) * cell_sessions),
        rng.poisson(np.where(builder, _STYLE_RATES[0][1], _STYLE_RATES[1][1]) * cell_sessions),
        rng.poisson(_QUEST_PER_SESSION * cell_sessions),
    ]
    purchase_cell = np.repeat(np.arange(n_cells, dtype=np.int32), purchases)
    median_v = np.asarray(spec.purchase_value_median)[pop.mon[sl][cell_player[purchase_cell]]]
    purchase_value = median_v * np.exp(_VALUE_SIGMA * rng.standard_normal(len(purchase_cell)))
    purchase_value = np.round(purchase_value, 2)
    refunded = rng.random(len(purchase_cell)) < _REFUND_SHARE
    return _Chunk(
        lo=lo,
        n_days=n_days,
        sess_cell=sess_cell,
        start_us=start_us,
        hour=hour,
        length_s=length_s,
        social_n=social_n,
        cell_player=cell_player,
        cell_day=cell_day,
        cell_sessions=cell_sessions,
        cell_first=cell_first,
        purchases=purchases,
        custom=custom,
        purchase_cell=purchase_cell,
        purchase_value=purchase_value,
        refunded=refunded,
    )


def _chunk_daily(ch: _Chunk, grid: _Grid, player_ids: pl.Series) -> pl.DataFrame:
    """Roll the shared draws of a chunk up into canonical daily rows (no input validation)."""
    n_cells = len(ch.cell_first)
    if n_cells == 0:
        return pl.DataFrame(schema=DAILY_SCHEMA)
    # float32 sines (numpy's float64 sin is slow here): ~1e-7 from the events' roll-up, far below noise.
    angle = (ch.hour * (2.0 * np.pi / 24.0)).astype(np.float32)
    night = (ch.hour >= 22.0) | (ch.hour < 6.0)
    sess_cell = ch.sess_cell.astype(np.intp)

    def per_cell(values: np.ndarray) -> np.ndarray:
        return np.bincount(sess_cell, values, minlength=n_cells)

    columns: dict[str, Any] = {
        "sessions": ch.cell_sessions.astype(np.float64),
        "playtime_minutes": per_cell(ch.length_s) / 60.0,
        "night_playtime_minutes": per_cell(np.where(night, ch.length_s, 0.0)) / 60.0,
        "purchases": ch.purchases.astype(np.float64),
        "spend": np.bincount(ch.purchase_cell, ch.purchase_value, minlength=n_cells),
        "refunds": np.bincount(ch.purchase_cell, ch.purchase_value * ch.refunded, minlength=n_cells),
        "social_events": per_cell(ch.social_n),
        "social_sessions": per_cell(ch.social_n > 0),
        "start_hour_sin_sum": per_cell(np.sin(angle)),
        "start_hour_cos_sum": per_cell(np.cos(angle)),
    }
    for i, name in enumerate(CUSTOM_EVENT_TYPES):
        columns[f"ev_{name}"] = ch.custom[i].astype(np.float64)
    day_num = (grid.first_date - _EPOCH).days + ch.cell_day
    return pl.DataFrame(
        {
            "player_id": player_ids.gather(pl.Series(ch.lo + ch.cell_player)),
            "date": pl.Series(day_num.astype(np.int32)).cast(pl.Date),
            **{name: pl.Series(name, columns[name], dtype=pl.Float64) for name in _DAILY_FLOATS},
        }
    )


@dataclass
class _Block:
    """Events of one type from one chunk: global player index, naive local time, value, properties."""

    player: np.ndarray
    local_us: np.ndarray
    value: np.ndarray | None = None  # None = null values
    prop: np.ndarray | None = None  # index into _PROPERTIES; None = null properties


def _place_in_cells(ch: _Chunk, cells: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform session of each given active cell and a uniform local time inside it.

    One uniform ``u`` per event does both: ``x = u * n_sessions``, the session is ``floor(x)`` and the
    position inside it ``x - floor(x)``, which is again uniform and independent of the session.
    """
    n_sessions = ch.cell_sessions[cells]
    x = rng.random(len(cells)) * n_sessions
    k = np.minimum(x.astype(np.int32), n_sessions - 1)  # u * n can round up to n
    sessions = ch.cell_first[cells] + k
    return sessions, _at(ch, sessions, np.minimum(x - k, 1.0))


def _at(ch: _Chunk, sessions: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Local timestamps at ``fraction`` of the given sessions' spans."""
    return ch.start_us[sessions] + (fraction * (ch.length_s[sessions] * _US_PER_S)).astype(np.int64)


def _chunk_events(ch: _Chunk, pop: _Population, rng: np.random.Generator) -> dict[str, _Block]:
    """Place the chunk's events in time (no input validation); one block per event type, by player."""
    sess_player = ch.cell_player[ch.sess_cell] + ch.lo
    blocks = {"session": _Block(sess_player, ch.start_us, ch.length_s)}

    p_sess, p_ts = _place_in_cells(ch, ch.purchase_cell, rng)
    blocks["purchase"] = _Block(sess_player[p_sess], p_ts, ch.purchase_value)
    r = np.flatnonzero(ch.refunded)
    lo, hi = _REFUND_DELAY_S
    r_ts = p_ts[r] + (rng.uniform(lo, hi, len(r)) * _US_PER_S).astype(np.int64)
    blocks["refund"] = _Block(sess_player[p_sess[r]], r_ts, ch.purchase_value[r])

    s_sess = np.repeat(np.arange(len(ch.start_us), dtype=np.int32), ch.social_n)
    s_player = sess_player[s_sess]
    s_prop = np.where(pop.soc[s_player] == 2, 1, 2).astype(np.uint8)
    blocks["social"] = _Block(s_player, _at(ch, s_sess, rng.random(len(s_sess))), prop=s_prop)

    for i, name in enumerate(CUSTOM_EVENT_TYPES):
        cells = np.repeat(np.arange(len(ch.cell_first), dtype=np.int32), ch.custom[i])
        c_sess, c_ts = _place_in_cells(ch, cells, rng)
        blocks[name] = _Block(sess_player[c_sess], c_ts)
    return blocks


def _local_to_utc_us(local_us: np.ndarray, timezone: str) -> np.ndarray:
    """Naive local epoch microseconds -> UTC epoch microseconds (vectorized via an hourly offset table).

    Ambiguous local times take the earlier offset; non-existent ones (spring forward) the offset before
    the gap.
    """
    if ZoneInfo(timezone) == ZoneInfo("UTC") or len(local_us) == 0:
        return local_us
    bucket = local_us // _US_PER_HOUR
    b0, b1 = int(bucket.min()), int(bucket.max())
    table = pl.Series(np.arange(b0 - 1, b1 + 1, dtype=np.int64) * _US_PER_HOUR)
    utc = (
        table.cast(pl.Datetime("us"))
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .cast(pl.Int64)
    )
    offset = (table - utc).fill_null(strategy="forward").fill_null(strategy="backward").to_numpy()
    return local_us - offset[bucket - b0 + 1]


# --------------------------------------------------------------------------------------------- assembly
def _player_ids(n: int) -> pl.Series:
    ids = pl.select(pl.format("p{}", pl.int_range(n, dtype=pl.Int64).cast(pl.Utf8).str.zfill(6))).to_series()
    if n:
        ids = ids.scatter(0, TEST_PLAYER)
    return ids.alias("player_id")


def _generate(spec: PlantedSpec, *, events: bool) -> SyntheticGame:
    as_of = spec.resolved_as_of()
    grid = _make_grid(spec, as_of)
    rng = np.random.default_rng(spec.seed)
    pop = _plant_population(spec, grid, rng)
    ids = _player_ids(spec.n_players)
    n = spec.n_players
    n_chunks = max(1, math.ceil(n / CHUNK_PLAYERS))
    streams = rng.spawn(n_chunks)

    def run(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, _Block] | pl.DataFrame]:
        lo, hi = i * CHUNK_PLAYERS, min(n, (i + 1) * CHUNK_PLAYERS)
        shared, placement = streams[i].spawn(2)
        ch = _simulate_chunk(spec, pop, grid, lo, hi, shared)
        spent = (ch.lo + ch.cell_player[ch.purchase_cell], ch.purchase_value, ch.refunded)
        return (*spent, _chunk_events(ch, pop, placement) if events else _chunk_daily(ch, grid, ids))

    # Each chunk has its own streams, so the result does not depend on how chunks are scheduled; numpy's
    # generators release the GIL, so two threads help on the 1M-player path.
    workers = min(_MAX_THREADS, n_chunks, os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, range(n_chunks)))
    else:
        results = [run(i) for i in range(n_chunks)]
    gross = np.zeros(n)
    refunds = np.zeros(n)
    for buyer, value, refunded, _ in results:
        gross += np.bincount(buyer, value, minlength=n)
        refunds += np.bincount(buyer, value * refunded, minlength=n)
    parts = [r[3] for r in results]
    del results
    event_parts: list[dict[str, _Block]] = parts if events else []  # type: ignore[assignment]
    daily_parts: list[pl.DataFrame] = [] if events else parts  # type: ignore[assignment]

    events_df = _events_frame(event_parts, spec, grid, ids) if events else None
    daily_df = pl.concat(daily_parts, rechunk=False) if not events else None
    exposure = (grid.n_days - 1 - pop.first_idx) + grid.last_day_fraction
    per_28 = 28.0 * np.maximum(gross - refunds, 0.0) / np.maximum(exposure, 1.0)
    ltv = np.maximum(_LTV_FACTOR * per_28 * pop.ltv_mult + pop.ltv_abs, 0.0)
    outcomes = pl.DataFrame(
        {
            "player_id": ids,
            "ltv": pl.Series(np.round(ltv, 2), dtype=pl.Float64),
            "churned": pl.Series(pop.churned, dtype=pl.Int8),
            "support_tickets": pl.Series(pop.tickets, dtype=pl.Float64),
        }
    )
    typical = (
        grid.first_date + timedelta(days=grid.typical_start),
        grid.first_date + timedelta(days=grid.current_start - 1),
    )
    current = (grid.first_date + timedelta(days=grid.current_start), as_of.date())
    return SyntheticGame(
        spec=spec,
        as_of=as_of,
        events=events_df,
        daily=daily_df,
        outcomes=outcomes,
        truth=_truth_frame(spec, pop, grid, ids),
        windows={"current": current, "typical": typical},
    )


def _events_frame(parts: list[dict[str, _Block]], spec: PlantedSpec, grid: _Grid, ids: pl.Series) -> pl.DataFrame:
    """Assemble the canonical Events frame, grouped by event type, each type in player order.

    Consumes ``parts``. Events after ``as_of`` (a late refund, a DST gap) are dropped here.
    """
    players, stamps, types, values, props = [], [], [], [], []
    for name in EVENT_TYPES:
        blocks = [part.pop(name) for part in parts]

        def cat(attr: str, blocks: list[_Block] = blocks) -> np.ndarray:
            return np.concatenate([getattr(b, attr) for b in blocks])

        utc_us = _local_to_utc_us(cat("local_us"), spec.timezone)
        keep = utc_us <= grid.as_of_utc_us
        keep_all = bool(keep.all())
        n_type = len(utc_us) if keep_all else int(keep.sum())

        def kept(a: np.ndarray, keep: np.ndarray = keep, keep_all: bool = keep_all) -> np.ndarray:
            return a if keep_all else a[keep]

        players.append(kept(cat("player")))
        stamps.append(kept(utc_us))
        types.append(pl.repeat(name, n_type, dtype=pl.Utf8, eager=True))
        if blocks[0].value is not None:
            values.append(pl.Series(kept(cat("value")), dtype=pl.Float64))
        else:
            values.append(pl.repeat(None, n_type, dtype=pl.Float64, eager=True))
        if blocks[0].prop is not None:
            props.append(pl.Series(_PROPERTIES, dtype=pl.Utf8).gather(pl.Series(kept(cat("prop")))))
        else:
            props.append(pl.repeat(None, n_type, dtype=pl.Utf8, eager=True))
        del blocks
    utc_all = np.concatenate(stamps)
    del stamps
    n_events = len(utc_all)
    return pl.DataFrame(
        {
            # 12 digits (inline in Polars' string views); a CSV reader inferring integers round-trips them.
            "event_id": pl.Series(np.arange(_EVENT_ID_BASE, _EVENT_ID_BASE + n_events)).cast(pl.Utf8),
            "player_id": ids.gather(pl.Series(np.concatenate(players))),
            "event_type": pl.concat(types),
            "timestamp": pl.Series(utc_all, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "value": pl.concat(values),
            "properties": pl.concat(props),
        }
    )


def _truth_frame(spec: PlantedSpec, pop: _Population, grid: _Grid, ids: pl.Series) -> pl.DataFrame:
    def labels(names: Sequence[str], codes: np.ndarray) -> pl.Series:
        return pl.Series(list(names), dtype=pl.Utf8).gather(pl.Series(codes.astype(np.int32)))

    day_num = (grid.first_date - _EPOCH).days + pop.first_idx
    factors = _day_factors()[pop.tem]
    has_anomaly = pop.anomaly >= 0
    kind = np.where(has_anomaly, pop.anomaly, 0)
    anomaly_factor = np.where(has_anomaly, np.asarray([_ANOMALY_FACTOR[k] for k in ANOMALY_KINDS])[kind], 1.0)
    shift = np.where(pop.anomaly == ANOMALY_KINDS.index("schedule_shift"), _SHIFT_HOURS, 0.0)
    style_rates = np.asarray(_STYLE_RATES)[pop.style]
    anomaly = labels(ANOMALY_KINDS, kind)
    return pl.DataFrame(
        {
            "player_id": ids,
            "monetization": labels(MONETIZATION_TIERS, pop.mon),
            "engagement": labels(ENGAGEMENT_TIERS, pop.eng),
            "temporal": labels(TEMPORAL_TIERS, pop.tem),
            "social": labels(SOCIAL_TIERS, pop.soc),
            "play_style": labels(PLAY_STYLES, pop.style),
            "first_day": pl.Series(day_num.astype(np.int32)).cast(pl.Date),
            "installed": pl.Series(pop.installed, dtype=pl.Boolean),
            "typical_exposure_days": pl.Series(_typical_exposure(pop.first_idx, grid), dtype=pl.Float64),
            "anomaly": anomaly.scatter(np.flatnonzero(~has_anomaly), None),
            "anomaly_factor": pl.Series(anomaly_factor, dtype=pl.Float64),
            "anomaly_shift_hours": pl.Series(shift, dtype=pl.Float64),
            "true_sessions_rate": pl.Series(pop.sess_rate, dtype=pl.Float64),
            "true_weekday_factor": pl.Series(factors[:, 0], dtype=pl.Float64),
            "true_weekend_factor": pl.Series(factors[:, 1], dtype=pl.Float64),
            "true_session_minutes_median": pl.Series(
                np.asarray(spec.session_minutes_median)[pop.eng], dtype=pl.Float64
            ),
            "true_start_hour": pl.Series(np.asarray([h for h, _ in _START_HOUR])[pop.tem], dtype=pl.Float64),
            "true_start_hour_sd": pl.Series(np.asarray([s for _, s in _START_HOUR])[pop.tem], dtype=pl.Float64),
            "true_purchase_rate": pl.Series(pop.purch_rate, dtype=pl.Float64),
            "true_purchase_value_median": pl.Series(np.asarray(spec.purchase_value_median)[pop.mon], dtype=pl.Float64),
            "true_social_per_session": pl.Series(pop.social_rate, dtype=pl.Float64),
            "true_build_per_session": pl.Series(style_rates[:, 0], dtype=pl.Float64),
            "true_raid_per_session": pl.Series(style_rates[:, 1], dtype=pl.Float64),
            "true_quest_per_session": pl.Series(np.full(spec.n_players, _QUEST_PER_SESSION), dtype=pl.Float64),
        }
    )
