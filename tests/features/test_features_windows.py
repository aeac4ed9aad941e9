"""Windows, contexts and window_features on a hand-built Christmas week (Europe/London, GB holidays).

The current window as of Sunday 2025-12-28 12:00 is Mon 22 .. Sun 28: 22-24 weekdays, 25-26 GB
holidays (Christmas, Boxing Day), 27-28 weekend, the 28th half elapsed -> exposure 3 + 2 + 1.5 = 6.5.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from unified_segmentation.errors import InvalidInput
from unified_segmentation.features import (
    HEAVY_TAILED,
    METRICS_BY_AXIS,
    Window,
    context_day_weights,
    events_to_daily,
    normalize_daily,
    select_custom_types,
    window_context,
    window_features,
    windows_for,
)
from unified_segmentation.features.windows import MIN_RATE_EXPOSURE_DAYS, holiday_dates
from unified_segmentation.ingest import read_events

TZ = "Europe/London"
AS_OF = dt.datetime(2025, 12, 28, 12, 0)  # naive: local time of the game


def _angle(hour: float) -> float:
    return 2 * math.pi * hour / 24


ROWS = [
    # a: known since December 1st
    {"player_id": "a", "event_type": "session", "timestamp": "2025-12-01T10:00:00", "value": 600},
    {"player_id": "a", "event_type": "session", "timestamp": "2025-12-22T20:00:00", "value": 1800},
    {"player_id": "a", "event_type": "session", "timestamp": "2025-12-25T23:30:00", "value": 3600},
    {"player_id": "a", "event_type": "social", "timestamp": "2025-12-25T23:45:00", "properties": {"kind": "guild"}},
    {"player_id": "a", "event_type": "purchase", "timestamp": "2025-12-25T10:00:00", "value": 10.0},
    {"player_id": "a", "event_type": "refund", "timestamp": "2025-12-26T11:00:00", "value": 4.0},
    {"player_id": "a", "event_type": "session", "timestamp": "2025-12-27T10:00:00", "value": 1800},
    {"player_id": "a", "event_type": "level_up", "timestamp": "2025-12-27T10:10:00"},
    # b: first seen on Boxing Day; refunds more than they bought
    {"player_id": "b", "event_type": "session", "timestamp": "2025-12-26T09:00:00", "value": 1200},
    {"player_id": "b", "event_type": "purchase", "timestamp": "2025-12-26T09:05:00", "value": 5.0},
    {"player_id": "b", "event_type": "refund", "timestamp": "2025-12-26T09:10:00", "value": 8.0},
    # c: known, silent in the current window
    {"player_id": "c", "event_type": "session", "timestamp": "2025-12-01T09:00:00", "value": 600},
    # d: first seen after the window -> unknown
    {"player_id": "d", "event_type": "session", "timestamp": "2025-12-29T09:00:00", "value": 600},
]


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    return events_to_daily(read_events(ROWS, timezone=TZ), timezone=TZ)


@pytest.fixture(scope="module")
def windows() -> dict[str, Window]:
    return windows_for(AS_OF, timezone=TZ, profile_days=28, current_days=7, typical_days=28)


@pytest.fixture(scope="module")
def current(daily: pl.DataFrame, windows: dict[str, Window]) -> dict[str, dict]:
    features = window_features(daily, windows["current"], holiday_country="GB")
    return {row["player_id"]: row for row in features.to_dicts()}


def test_windows_for_days_and_partial_last_day(windows: dict[str, Window]) -> None:
    assert windows["current"] == Window(dt.date(2025, 12, 22), dt.date(2025, 12, 28), 0.5)
    assert windows["profile"] == Window(dt.date(2025, 12, 1), dt.date(2025, 12, 28), 0.5)
    assert windows["typical"] == Window(dt.date(2025, 11, 24), dt.date(2025, 12, 21), 1.0)
    assert windows["current"].exposure_days == 6.5
    null_run = windows_for(AS_OF, timezone=TZ, profile_days=28, current_days=7, typical_days=28, shift_days=7)
    assert null_run["current"] == Window(dt.date(2025, 12, 15), dt.date(2025, 12, 21), 1.0)
    assert null_run["typical"].end == dt.date(2025, 12, 14)


def test_as_of_forms_agree() -> None:
    aware = dt.datetime(2025, 12, 28, 12, 0, tzinfo=dt.UTC)  # London is UTC+0 in December
    assert windows_for(aware, timezone=TZ) == windows_for(AS_OF, timezone=TZ)
    assert windows_for("2025-12-28T12:00:00Z", timezone=TZ) == windows_for(AS_OF, timezone=TZ)
    whole_day = windows_for(dt.date(2025, 12, 28), timezone=TZ)["current"]
    assert whole_day.last_day_fraction == 1.0 and whole_day.end == dt.date(2025, 12, 28)
    # 23:30 in Tokyo on the 28th is 14:30 UTC: the local day decides
    tokyo = windows_for(dt.datetime(2025, 12, 28, 14, 30, tzinfo=dt.UTC), timezone="Asia/Tokyo")["current"]
    assert tokyo.end == dt.date(2025, 12, 28) and tokyo.last_day_fraction == pytest.approx(23.5 / 24)
    with pytest.raises(InvalidInput):
        windows_for(AS_OF, timezone=TZ, current_days=0)


def test_contexts_of_the_christmas_week(windows: dict[str, Window]) -> None:
    assert holiday_dates("GB", dt.date(2025, 12, 22), dt.date(2025, 12, 28)) == [
        dt.date(2025, 12, 25), dt.date(2025, 12, 26)
    ]
    assert window_context(windows["current"], "GB") == "holiday"
    assert window_context(windows["current"]) == "weekday"  # no holiday country: 5 weekdays vs 1.5
    weights = context_day_weights(windows["current"], "GB")
    assert weights == pytest.approx({"weekday": 3 / 6.5, "weekend": 1.5 / 6.5, "holiday": 2 / 6.5})
    weekend = Window(dt.date(2025, 12, 27), dt.date(2025, 12, 28))
    assert window_context(weekend, "GB") == "weekend"
    with pytest.raises(InvalidInput) as info:
        window_context(weekend, "XX")
    assert info.value.extra["field"] == "holiday_country"


def test_known_players_silent_included_unknown_excluded(current: dict[str, dict]) -> None:
    assert sorted(current) == ["a", "b", "c"]  # d's first activity is after the window
    silent = current["c"]
    assert silent["exposure_days"] == 6.5 and silent["active_days"] == 0
    for metric in ("sessions_per_day", "spend_per_day", "active_day_share", "avg_session_minutes",
                   "weekend_play_share", "social_session_share", "level_up_per_day"):
        assert silent[metric] == 0.0


def test_exposure_starts_at_first_activity(current: dict[str, dict]) -> None:
    late = current["b"]  # Boxing Day (holiday) + Saturday + half a Sunday
    assert late["exposure_days"] == 2.5
    assert (late["exposure_weekday"], late["exposure_holiday"], late["exposure_weekend"]) == (0.0, 1.0, 1.5)
    assert late["sessions_per_day"] == pytest.approx(1 / 2.5)
    assert late["active_day_share"] == pytest.approx(1 / 2.5)
    long_time = current["a"]
    assert (long_time["exposure_weekday"], long_time["exposure_holiday"], long_time["exposure_weekend"]) == (
        3.0, 2.0, 1.5
    )


def test_refunds_cap_spend_at_zero(current: dict[str, dict]) -> None:
    b = current["b"]
    assert b["net_spend"] == 0.0 and b["spend_per_day"] == 0.0 and b["avg_purchase_value"] == 0.0
    assert b["has_purchase"] == 1.0 and b["purchases_per_day"] == pytest.approx(1 / 2.5)


def test_metrics_of_the_long_time_player(current: dict[str, dict]) -> None:
    a = current["a"]
    assert (a["sessions"], a["playtime_minutes"], a["purchases"], a["net_spend"]) == (3, 120, 1, 6.0)
    assert a["active_days"] == 3  # 22, 25, 27 (a refund alone is not activity)
    assert a["spend_per_day"] == pytest.approx(6 / 6.5)
    assert a["avg_purchase_value"] == 6.0
    assert a["sessions_per_day"] == pytest.approx(3 / 6.5)
    assert a["avg_session_minutes"] == 40.0
    assert a["active_day_share"] == pytest.approx(3 / 6.5)
    assert a["weekend_play_share"] == pytest.approx((60 + 30) / 120)  # holiday + Saturday playtime
    assert a["night_play_share"] == pytest.approx(60 / 120)
    hours = (20.0, 23.5, 10.0)
    assert a["start_hour_sin"] == pytest.approx(sum(math.sin(_angle(h)) for h in hours) / 3)
    assert a["start_hour_cos"] == pytest.approx(sum(math.cos(_angle(h)) for h in hours) / 3)
    assert a["social_events_per_session"] == pytest.approx(1 / 3)
    assert a["social_session_share"] == pytest.approx(1 / 3)
    assert a["level_up_per_day"] == pytest.approx(1 / 6.5)


def test_partial_last_day_and_a_purchase_now(daily: pl.DataFrame) -> None:
    """A purchase at as_of raises spend_per_day by value / exposure; the half day counts half."""
    window = windows_for(AS_OF, timezone=TZ)["current"]
    before = window_features(daily, window, holiday_country="GB").filter(pl.col("player_id") == "a")
    extra = read_events(
        [{"player_id": "a", "event_type": "purchase", "timestamp": "2025-12-28T11:59:00", "value": 13.0}],
        timezone=TZ,
    )
    events = pl.concat([read_events(ROWS, timezone=TZ), extra])
    after = window_features(events_to_daily(events, timezone=TZ), window, holiday_country="GB")
    after = after.filter(pl.col("player_id") == "a")
    assert after["spend_per_day"][0] - before["spend_per_day"][0] == pytest.approx(13.0 / 6.5)
    # at 01:00 on Monday the new day counts 1/24
    monday = windows_for(dt.datetime(2025, 12, 29, 1, 0), timezone=TZ)["current"]
    assert monday.last_day_fraction == pytest.approx(1 / 24)


def test_context_restriction(daily: pl.DataFrame, windows: dict[str, Window]) -> None:
    weekend = window_features(daily, windows["current"], holiday_country="GB", context="weekend")
    a = weekend.filter(pl.col("player_id") == "a").to_dicts()[0]
    assert a["exposure_days"] == 1.5 and a["exposure_weekday"] == 0.0 and a["exposure_holiday"] == 0.0
    assert a["sessions"] == 1 and a["purchases"] == 0
    holiday = window_features(daily, windows["current"], holiday_country="GB", context="holiday")
    a = holiday.filter(pl.col("player_id") == "a").to_dicts()[0]
    assert a["exposure_days"] == 2.0 and a["net_spend"] == 6.0 and a["sessions"] == 1
    with pytest.raises(InvalidInput):
        window_features(daily, windows["current"], context="night")


def test_first_seen_extends_exposure_back(daily: pl.DataFrame, windows: dict[str, Window]) -> None:
    recent = daily.filter(pl.col("date") >= dt.date(2025, 12, 22))  # as if older days were not loaded
    without = window_features(recent, windows["current"])
    assert without.filter(pl.col("player_id") == "a")["exposure_days"][0] == 6.5  # a played on the 22nd
    first_seen = pl.DataFrame(
        {"player_id": ["a", "b", "c", "z"],
         "first_seen": [dt.date(2025, 12, 1), dt.date(2025, 12, 26), dt.date(2025, 12, 1), dt.date(2026, 1, 5)]}
    )
    with_history = window_features(recent, windows["current"], first_seen=first_seen)
    assert with_history["player_id"].to_list() == ["a", "b", "c"]  # c known from storage, z not yet
    assert with_history.filter(pl.col("player_id") == "c")["exposure_days"][0] == 6.5
    as_mapping = window_features(recent, windows["current"], first_seen={"c": dt.date(2025, 12, 24)})
    assert as_mapping.filter(pl.col("player_id") == "c")["exposure_days"][0] == 4.5


def test_rates_use_at_least_one_day_of_exposure(daily: pl.DataFrame) -> None:
    window = windows_for(dt.datetime(2025, 12, 26, 10, 0), timezone=TZ)["current"]
    b = window_features(daily, window).filter(pl.col("player_id") == "b").to_dicts()[0]
    assert b["exposure_days"] == pytest.approx(10 / 24)
    assert b["sessions_per_day"] == pytest.approx(1 / MIN_RATE_EXPOSURE_DAYS)
    assert b["active_day_share"] == 1.0


def test_daily_file_without_temporal_columns_omits_those_metrics() -> None:
    file_daily = normalize_daily(
        pl.DataFrame(
            {
                "player_id": ["p", "p", "q"],
                "date": [dt.date(2025, 12, 20), dt.date(2025, 12, 21), dt.date(2025, 12, 21)],
                "sessions": [2.0, 1.0, 0.0],
                "playtime_minutes": [40.0, 20.0, 0.0],
                "purchases": [1.0, 0.0, 0.0],
                "spend": [2.5, 0.0, 0.0],
                "social_events": [3.0, 0.0, 0.0],
                "boss_kills": [4.0, 0.0, 1.0],
            }
        )
    )
    features = window_features(file_daily, Window(dt.date(2025, 12, 15), dt.date(2025, 12, 21)))
    for omitted in ("night_play_share", "start_hour_sin", "start_hour_cos", "social_session_share",
                    "social_sessions"):
        assert omitted not in features.columns
    p = features.filter(pl.col("player_id") == "p").to_dicts()[0]
    assert p["exposure_days"] == 2.0 and p["sessions_per_day"] == 1.5
    assert p["weekend_play_share"] == 1.0  # 20 and 21 December 2025 are a Saturday and a Sunday
    assert p["boss_kills_per_day"] == 2.0
    q = features.filter(pl.col("player_id") == "q").to_dicts()[0]
    assert q["active_days"] == 1  # a boss kill is activity


def test_custom_types_selection(daily: pl.DataFrame, windows: dict[str, Window]) -> None:
    assert select_custom_types(daily) == ["level_up"]
    assert select_custom_types(daily, min_player_share=0.5) == []  # 1 of 4 players
    chosen = window_features(daily, windows["current"], custom_types=["ev_level_up", "quest"])
    assert {"level_up_per_day", "quest_per_day", "ev_quest"} <= set(chosen.columns)
    assert chosen["quest_per_day"].to_list() == [0.0, 0.0, 0.0]
    none = window_features(daily, windows["current"], custom_types=[])
    assert not [c for c in none.columns if c.startswith("ev_") or c.endswith("level_up_per_day")]


def test_metric_catalogue() -> None:
    assert set(METRICS_BY_AXIS) == {"monetization", "engagement", "temporal", "social"}
    assert METRICS_BY_AXIS["temporal"] == ["weekend_play_share", "night_play_share", "start_hour_sin",
                                           "start_hour_cos"]
    for name in ("spend_per_day", "purchases_per_day", "sessions_per_day", "avg_purchase_value",
                 "avg_session_minutes", "social_events_per_session", "level_up_per_day"):
        assert name in HEAVY_TAILED
    for name in ("has_purchase", "active_day_share", "start_hour_sin", "social_session_share"):
        assert name not in HEAVY_TAILED


def test_window_validation() -> None:
    with pytest.raises(InvalidInput):
        Window(dt.date(2025, 12, 2), dt.date(2025, 12, 1))
    with pytest.raises(InvalidInput):
        Window(dt.date(2025, 12, 1), dt.date(2025, 12, 2), 1.5)


def test_metric_helpers() -> None:
    from unified_segmentation.features import axis_of, canonical_metrics, is_heavy_tailed

    assert axis_of("night_play_share") == "temporal" and axis_of("quest_per_day") == "game_specific"
    with pytest.raises(KeyError):
        axis_of("nonsense")
    names = canonical_metrics(["quest"])
    assert names[0] == "spend_per_day" and names[-1] == "quest_per_day" and len(names) == 14
    assert is_heavy_tailed("quest_per_day") and not is_heavy_tailed("has_purchase")
