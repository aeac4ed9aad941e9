"""events_to_daily / normalize_daily / merge_daily on hand-built events with hand-computed values."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from unified_segmentation.errors import InvalidInput
from unified_segmentation.features import DAILY_BASE_COLUMNS, events_to_daily, merge_daily, normalize_daily
from unified_segmentation.features._kernels import factorize, local_epoch_us
from unified_segmentation.ingest import read_events

TZ = "Europe/London"


def _events(rows: list[dict], timezone: str = TZ) -> pl.DataFrame:
    return read_events(rows, timezone=timezone)


def _row(daily: pl.DataFrame, player: str, day: str) -> dict:
    found = daily.filter((pl.col("player_id") == player) & (pl.col("date") == dt.date.fromisoformat(day)))
    assert found.height == 1, f"expected one row for {player} {day}"
    return found.to_dicts()[0]


def _angle(hour: float) -> float:
    return 2 * math.pi * hour / 24


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    rows = [
        # player a: an evening session, a night session with a social event inside it, then one after it
        {"player_id": "a", "event_type": "session", "timestamp": "2025-12-22T20:00:00", "value": 1800},
        {"player_id": "a", "event_type": "session", "timestamp": "2025-12-25T23:30:00", "value": 3600},
        {"player_id": "a", "event_type": "social", "timestamp": "2025-12-25T23:45:00"},
        {"player_id": "a", "event_type": "social", "timestamp": "2025-12-26T00:10:00"},
        {"player_id": "a", "event_type": "social", "timestamp": "2025-12-26T02:00:00"},  # after the end
        {"player_id": "a", "event_type": "purchase", "timestamp": "2025-12-25T10:00:00", "value": 10.0},
        {"player_id": "a", "event_type": "refund", "timestamp": "2025-12-26T11:00:00", "value": 4.0},
        {"player_id": "a", "event_type": "Level_Up", "timestamp": "2025-12-22T20:10:00"},
        {"player_id": "a", "event_type": "level_up", "timestamp": "2025-12-22T20:20:00"},
        # player b: a morning session and a social event of *another* player's session time
        {"player_id": "b", "event_type": "session", "timestamp": "2025-12-22T05:30:00", "value": 600},
        {"player_id": "b", "event_type": "session", "timestamp": "2025-12-22T09:00:00"},  # no length
        {"player_id": "b", "event_type": "social", "timestamp": "2025-12-25T23:40:00"},
    ]
    return events_to_daily(_events(rows), timezone=TZ)


def test_schema_and_order(daily: pl.DataFrame) -> None:
    assert daily.columns == [*DAILY_BASE_COLUMNS, "ev_level_up"]
    assert daily.schema["date"] == pl.Date
    assert all(daily.schema[c] == pl.Float64 for c in daily.columns[2:])
    keys = daily.select("player_id", "date").rows()
    assert keys == sorted(keys)
    assert daily.height == 5  # a: 22, 25, 26; b: 22, 25


def test_sessions_playtime_night_and_hours(daily: pl.DataFrame) -> None:
    night = _row(daily, "a", "2025-12-25")
    assert night["sessions"] == 1
    assert night["playtime_minutes"] == 60
    assert night["night_playtime_minutes"] == 60  # starts 23:30 local
    assert night["start_hour_sin_sum"] == pytest.approx(math.sin(_angle(23.5)))
    assert night["start_hour_cos_sum"] == pytest.approx(math.cos(_angle(23.5)))
    evening = _row(daily, "a", "2025-12-22")
    assert evening["night_playtime_minutes"] == 0
    assert evening["ev_level_up"] == 2  # event types are lower-cased on ingestion
    morning = _row(daily, "b", "2025-12-22")
    assert morning["sessions"] == 2
    assert morning["playtime_minutes"] == 10  # the session without a length counts 0 minutes
    assert morning["night_playtime_minutes"] == 10  # 05:30 is night (22:00-06:00)
    assert morning["start_hour_sin_sum"] == pytest.approx(math.sin(_angle(5.5)) + math.sin(_angle(9)))


def test_purchases_refunds_and_social(daily: pl.DataFrame) -> None:
    christmas = _row(daily, "a", "2025-12-25")
    assert (christmas["purchases"], christmas["spend"], christmas["refunds"]) == (1, 10.0, 0)
    assert christmas["social_events"] == 1
    assert christmas["social_sessions"] == 1  # the 23:45 social event is inside 23:30 + 60 min
    boxing = _row(daily, "a", "2025-12-26")
    assert boxing["refunds"] == 4.0
    assert boxing["social_events"] == 2  # counted on their own day
    assert boxing["sessions"] == 0 and boxing["social_sessions"] == 0  # the session belongs to the 25th
    # b's social event falls inside a's session, not b's: no social session for b
    assert _row(daily, "b", "2025-12-25")["social_sessions"] == 0
    assert _row(daily, "b", "2025-12-22")["social_sessions"] == 0


def test_social_event_at_session_start_counts_even_when_listed_first() -> None:
    rows = [
        {"player_id": "p", "event_type": "social", "timestamp": "2025-06-01T10:00:00Z"},
        {"player_id": "p", "event_type": "session", "timestamp": "2025-06-01T10:00:00Z", "value": 60},
        {"player_id": "p", "event_type": "session", "timestamp": "2025-06-01T12:00:00Z", "value": 60},
        {"player_id": "p", "event_type": "social", "timestamp": "2025-06-01T12:01:00Z"},  # exactly the end
        {"player_id": "p", "event_type": "social", "timestamp": "2025-06-01T12:01:01Z"},
    ]
    daily = events_to_daily(_events(rows, "UTC"), timezone="UTC")
    assert daily["social_sessions"].to_list() == [2.0]


def test_timezone_moves_an_event_to_another_local_day() -> None:
    rows = [{"player_id": "p", "event_type": "session", "timestamp": "2025-12-22T23:30:00Z", "value": 600}]
    events = _events(rows, "UTC")
    assert events_to_daily(events, timezone="UTC")["date"].to_list() == [dt.date(2025, 12, 22)]
    tokyo = events_to_daily(events, timezone="Asia/Tokyo")  # 08:30 on the 23rd
    assert tokyo["date"].to_list() == [dt.date(2025, 12, 23)]
    assert tokyo["night_playtime_minutes"].to_list() == [0.0]
    new_york = events_to_daily(events, timezone="America/New_York")  # 18:30 on the 22nd
    assert new_york["date"].to_list() == [dt.date(2025, 12, 22)]
    assert new_york["start_hour_sin_sum"][0] == pytest.approx(math.sin(_angle(18.5)))


def test_local_time_matches_polars_across_dst() -> None:
    rng = np.random.default_rng(3)
    utc = rng.integers(1_500_000_000, 1_800_000_000, 20_000) * 1_000_000 + rng.integers(0, 999_999, 20_000)
    for zone in ("Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Asia/Kathmandu"):
        expected = (
            pl.Series(utc).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").dt.convert_time_zone(zone)
            .dt.replace_time_zone(None).cast(pl.Int64).to_numpy()
        )
        np.testing.assert_array_equal(local_epoch_us(utc, zone), expected, err_msg=zone)


def test_factorize_is_exact_and_sorted() -> None:
    values = pl.Series(["b", "a", "c", "a", "b", "", "a"])
    codes, uniques = factorize(values)
    assert uniques.to_list() == ["", "a", "b", "c"]
    assert uniques.gather(codes).to_list() == values.to_list()


def test_roll_up_agrees_with_a_plain_group_by() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    events = pl.DataFrame(
        {
            "player_id": pl.Series(rng.integers(0, 300, n)).cast(pl.String),
            "event_type": pl.Series(rng.choice(["session", "purchase", "social", "refund", "quest"], n)),
            "timestamp": pl.Series(1_735_689_600_000_000 + rng.integers(0, 40 * 86_400_000_000, n))
            .cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "value": rng.exponential(100.0, n),
        }
    )
    ours = events_to_daily(events, timezone="America/Sao_Paulo")
    local = pl.col("timestamp").dt.convert_time_zone("America/Sao_Paulo")
    is_ = pl.col("event_type").__eq__
    reference = (
        events.group_by("player_id", local.dt.date().alias("date"))
        .agg(
            is_("session").sum().cast(pl.Float64).alias("sessions"),
            (pl.col("value").filter(is_("session")).sum() / 60).alias("playtime_minutes"),
            pl.col("value").filter(is_("purchase")).sum().alias("spend"),
            pl.col("value").filter(is_("refund")).sum().alias("refunds"),
            is_("social").sum().cast(pl.Float64).alias("social_events"),
            is_("quest").sum().cast(pl.Float64).alias("ev_quest"),
            (2 * math.pi * (local.dt.hour() + local.dt.minute() / 60 + local.dt.second() / 3600
                            + local.dt.microsecond() / 3.6e9) / 24)
            .sin().filter(is_("session")).sum().alias("start_hour_sin_sum"),
        )
        .sort("player_id", "date")
    )
    assert_frame_equal(ours.select(reference.columns), reference, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_empty_and_missing_columns() -> None:
    empty = events_to_daily(read_events([]), timezone="UTC")
    assert empty.height == 0 and empty.columns == list(DAILY_BASE_COLUMNS)
    with pytest.raises(InvalidInput) as info:
        events_to_daily(pl.DataFrame({"player_id": ["a"]}), timezone="UTC")
    assert info.value.extra["field"] == "event_type"
    with pytest.raises(InvalidInput):
        events_to_daily(empty, timezone="Mars/Olympus")


def test_normalize_daily_keeps_unknowns_null_and_renames_extras() -> None:
    frame = pl.DataFrame(
        {
            "player_id": ["a", "b"],
            "date": ["2025-12-24", "2025-12-25"],
            "sessions": [2, 1],
            "playtime_minutes": [30.0, 12.0],
            "purchases": [0, 1],
            "spend": [0.0, 4.99],
            "social_events": [1, 0],
            "Boss Kills": [3, None],
            "country": ["GB", "FR"],
        }
    )
    daily = normalize_daily(frame)
    assert daily.columns == [*DAILY_BASE_COLUMNS, "ev_boss_kills"]
    assert daily["date"].to_list() == [dt.date(2025, 12, 24), dt.date(2025, 12, 25)]
    assert daily["refunds"].to_list() == [0.0, 0.0]
    for unknown in ("night_playtime_minutes", "social_sessions", "start_hour_sin_sum", "start_hour_cos_sum"):
        assert daily[unknown].null_count() == 2
    assert daily["ev_boss_kills"].to_list() == [3.0, 0.0]


def test_merge_daily_file_rows_replace_the_roll_up(daily: pl.DataFrame) -> None:
    file_rows = normalize_daily(
        pl.DataFrame(
            {
                "player_id": ["a", "c"],
                "date": [dt.date(2025, 12, 25), dt.date(2025, 12, 25)],
                "sessions": [5.0, 1.0],
                "playtime_minutes": [100.0, 5.0],
                "purchases": [0.0, 0.0],
                "spend": [0.0, 0.0],
                "social_events": [0.0, 2.0],
                "ev_boss": [1.0, 0.0],
            }
        )
    )
    merged = merge_daily(daily, file_rows)
    assert merged.height == daily.height + 1  # a/25 replaced, c/25 added
    replaced = _row(merged, "a", "2025-12-25")
    assert replaced["sessions"] == 5 and replaced["spend"] == 0  # the whole row comes from the file
    assert replaced["night_playtime_minutes"] is None  # unknown in the file: not zero
    assert replaced["ev_level_up"] == 0 and replaced["ev_boss"] == 1
    kept = _row(merged, "a", "2025-12-22")
    assert kept["ev_boss"] == 0 and kept["ev_level_up"] == 2
    assert merge_daily(daily, None) is daily
    assert merge_daily(None, file_rows).height == 2


@pytest.mark.parametrize("time_ordered", [True, False])
def test_social_sessions_equal_a_join_asof(time_ordered: bool) -> None:
    rng = np.random.default_rng(5)
    n_sessions, n_social = 3_000, 4_000
    starts = 1_735_689_600_000_000 + rng.choice(20 * 86_400, n_sessions + n_social, replace=False) * 1_000_000
    events = pl.DataFrame(
        {
            "player_id": pl.Series(rng.integers(0, 80, n_sessions + n_social)).cast(pl.String),
            "event_type": ["session"] * n_sessions + ["social"] * n_social,
            "timestamp": pl.Series(starts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "value": np.concatenate([rng.exponential(3_000.0, n_sessions), np.zeros(n_social)]),
        }
    )
    if time_ordered:
        events = events.sort("timestamp")
    sessions = (
        events.filter(pl.col("event_type") == "session")
        .with_row_index("sid")
        .with_columns(end=pl.col("timestamp") + pl.duration(microseconds=(pl.col("value") * 1e6).round()))
        .sort("timestamp")
    )
    social = events.filter(pl.col("event_type") == "social").select("player_id", at="timestamp").sort("at")
    matched = social.join_asof(sessions, left_on="at", right_on="timestamp", by="player_id", check_sortedness=False)
    reference = (
        matched.filter(pl.col("at") <= pl.col("end"))
        .unique("sid")
        .group_by("player_id", pl.col("timestamp").dt.date().alias("date"))
        .agg(pl.len().cast(pl.Float64).alias("expected"))
    )
    daily = events_to_daily(events, timezone="UTC").join(reference, on=["player_id", "date"], how="left")
    assert reference["expected"].sum() > 100
    assert daily["social_sessions"].to_list() == daily["expected"].fill_null(0.0).to_list()


def test_factorize_survives_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    import unified_segmentation.features._kernels as kernels

    def everything_collides(hashes: np.ndarray, expected: int) -> tuple[np.ndarray, int]:
        return np.zeros(hashes.size, dtype=np.int64), 1

    monkeypatch.setattr(kernels, "_hash_slots", everything_collides)
    values = pl.Series(["b", "a", "c", "a"])
    codes, uniques = kernels.factorize(values)
    assert uniques.to_list() == ["a", "b", "c"]
    assert uniques.gather(codes).to_list() == values.to_list()


@pytest.mark.parametrize("n", [1, 7, 300, 5000])
def test_small_batch_numbering_matches_hash_numbering(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to a few thousand events ids are numbered with Python sets; the roll-up is identical to the
    vectorized numbering's (ids in byte order, non-ASCII ids included)."""
    from unified_segmentation.features import daily as daily_module

    rng = np.random.default_rng(n)
    ids = np.array(["p1", "p10", "p2", "Zed", "élan", "日本", "e\u0301", "~"])
    kinds = np.array(["session", "purchase", "refund", "social", "quest", "Boss_kill"])
    t0 = dt.datetime(2024, 3, 30, 20, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "player_id": ids[rng.integers(0, ids.size, n)],
            "event_type": kinds[rng.integers(0, kinds.size, n)],
            "timestamp": [t0 + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 3 * 86_400, n)],
            "value": [None if v < 0.1 else float("nan") if v < 0.15 else 600 * v for v in rng.random(n)],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "value": pl.Float64},
    )
    small = events_to_daily(events, timezone=TZ)
    monkeypatch.setattr(daily_module, "_SMALL_BATCH", -1)
    assert_frame_equal(small, events_to_daily(events, timezone=TZ))
    assert small["player_id"].to_list() == sorted(small["player_id"].to_list(), key=lambda s: s.encode())
