"""read_daily / read_outcomes: canonical frames, extras as ev_ counts, validation naming row and field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from unified_segmentation.errors import InvalidInput
from unified_segmentation.features import DAILY_BASE_COLUMNS, events_to_daily, merge_daily
from unified_segmentation.ingest import read_daily, read_events, read_outcomes

DAILY_CSV = (
    "player_id,date,sessions,playtime_minutes,purchases,spend,social_events,boss_kills,country\n"
    "p1,2025-12-24,2,45.5,1,4.99,3,7,GB\n"
    "p2,2025-12-24,1,10,0,0,0,0,FR\n"
    "p1,2025-12-25,0,0,0,0,1,2,GB\n"
)


def test_read_daily_csv(tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(DAILY_CSV)
    daily = read_daily(path)
    assert daily.columns == [*DAILY_BASE_COLUMNS, "ev_boss_kills"]  # the text column is ignored
    assert daily.select("player_id", "date").rows() == [
        ("p1", dt.date(2025, 12, 24)), ("p1", dt.date(2025, 12, 25)), ("p2", dt.date(2025, 12, 24))
    ]
    first = daily.row(0, named=True)
    assert (first["sessions"], first["playtime_minutes"], first["spend"], first["ev_boss_kills"]) == (2, 45.5, 4.99, 7)
    assert first["refunds"] == 0.0
    assert first["night_playtime_minutes"] is None and first["social_sessions"] is None
    assert first["start_hour_sin_sum"] is None


def test_read_daily_mapping_and_optional_columns() -> None:
    rows = [
        {"user": "u1", "day": "2025-12-24T00:00:00", "n": 2, "mins": 30, "buys": 1, "revenue_cents": 499,
         "chats": 0, "night": 10, "social_sessions": 1},
    ]
    daily = read_daily(
        rows,
        mapping={"player_id": "user", "date": "day", "sessions": "n", "playtime_minutes": "mins",
                 "purchases": "buys", "spend": "revenue_cents / 100.0", "social_events": "chats",
                 "night_playtime_minutes": "night"},
    )
    row = daily.row(0, named=True)
    assert row["date"] == dt.date(2025, 12, 24) and row["spend"] == pytest.approx(4.99)
    assert row["night_playtime_minutes"] == 10 and row["social_sessions"] == 1
    assert [c for c in daily.columns if c.startswith("ev_")] == []  # revenue_cents was used by the mapping


def test_read_daily_validation() -> None:
    rows = [
        {"player_id": "p", "date": "2025-12-24", "sessions": 1, "playtime_minutes": 5, "purchases": 0,
         "spend": 0, "social_events": 0},
        {"player_id": "p", "date": "24/12/2025", "sessions": 1, "playtime_minutes": 5, "purchases": 0,
         "spend": 0, "social_events": 0},
        {"player_id": "p", "date": "2025-12-25", "sessions": -1, "playtime_minutes": "nan", "purchases": 0,
         "spend": 0, "social_events": None},
        {"player_id": "p", "date": "2025-12-24", "sessions": 1, "playtime_minutes": 5, "purchases": 0,
         "spend": 0, "social_events": 0},
    ]
    with pytest.raises(InvalidInput) as info:
        read_daily(rows)
    found = [(e["row"], e["field"], e["message"]) for e in info.value.extra["errors"]]
    assert found == [
        (2, "date", "unparseable date: use YYYY-MM-DD"),
        (3, "sessions", "sessions is negative (-1.0)"),
        (3, "playtime_minutes", "playtime_minutes is NaN"),
        (3, "social_events", "social_events is empty"),
        (4, "date", "duplicate player_id/date (first at row 1)"),
    ]
    daily, rejects = read_daily(rows, skip_invalid=True)
    assert daily.height == 1 and rejects["row"].to_list() == [2, 3, 4]
    with pytest.raises(InvalidInput) as info:
        read_daily([{"player_id": "p", "date": "2025-12-24"}])
    assert info.value.extra["field"] == "sessions"


def test_daily_file_replaces_event_roll_up() -> None:
    events = read_events(
        [{"player_id": "p", "event_type": "session", "timestamp": "2025-12-24T23:00:00Z", "value": 600},
         {"player_id": "p", "event_type": "session", "timestamp": "2025-12-25T10:00:00Z", "value": 600}]
    )
    file_daily = read_daily(
        [{"player_id": "p", "date": "2025-12-24", "sessions": 3, "playtime_minutes": 90, "purchases": 0,
          "spend": 0, "social_events": 0}]
    )
    merged = merge_daily(events_to_daily(events, timezone="UTC"), file_daily)
    assert merged.select("date", "sessions", "night_playtime_minutes").rows() == [
        (dt.date(2025, 12, 24), 3.0, None), (dt.date(2025, 12, 25), 1.0, 0.0)
    ]


def test_read_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("player_id,ltv,churned,support_tickets\n001,12.5,1,0\n002,,false,3\n003,0,,\n")
    outcomes = read_outcomes(path)
    assert outcomes.schema == pl.Schema(
        {"player_id": pl.String, "ltv": pl.Float64, "churned": pl.Int8, "support_tickets": pl.Float64}
    )
    assert outcomes.rows() == [("001", 12.5, 1, 0.0), ("002", None, 0, 3.0), ("003", 0.0, None, None)]
    partial = read_outcomes([{"id": "a", "churned": True}], mapping={"player_id": "id"})
    assert partial.rows() == [("a", None, 1, None)]


def test_read_outcomes_validation() -> None:
    rows = [
        {"player_id": "a", "ltv": -1.0, "churned": 2, "support_tickets": 1},
        {"player_id": "b", "ltv": float("inf"), "churned": "maybe", "support_tickets": 0},
        {"player_id": "a", "ltv": 1.0, "churned": 0, "support_tickets": 0},
    ]
    with pytest.raises(InvalidInput) as info:
        read_outcomes(rows)
    found = [(e["row"], e["field"]) for e in info.value.extra["errors"]]
    assert found == [(1, "ltv"), (1, "churned"), (2, "ltv"), (2, "churned"), (3, "player_id")]
    with pytest.raises(InvalidInput):
        read_outcomes([{"ltv": 1.0}])
