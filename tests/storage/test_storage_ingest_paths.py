"""Both write paths of ingestion store the same thing.

PostgreSQL writes small frames with one ``json_to_recordset`` statement (``INSERT ... ON CONFLICT``)
and larger ones through ``COPY`` staging; the threshold is forced to 0 here so the staged path runs on
the same small data. On SQLite the threshold does not apply (both parameters run the one path).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from sqlalchemy.orm import Session

from unified_segmentation.storage import _bulk
from unified_segmentation.storage import repositories as repo

from .conftest import T0, make_events

D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)


@pytest.fixture(params=["statement", "staged"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "staged":
        monkeypatch.setattr(_bulk, "SMALL_STATEMENT_ROWS", 0)
    return request.param


def test_events_dedup_against_stored_and_purged_keys(db_session: Session, game: str, write_path: str) -> None:
    rows = [(f"e{i}", f"p{i % 3}", "purchase" if i % 2 else "session", T0 + dt.timedelta(hours=i), float(i))
            for i in range(10)]
    first = repo.insert_events(db_session, game, make_events(rows))
    assert (first.inserted, first.duplicates) == (10, 0)
    assert first.new_events["event_id"].to_list() == [f"e{i}" for i in range(10)]
    assert repo.purge_events(db_session, game, before=T0 + dt.timedelta(hours=2)) == 2  # e0, e1: keys kept

    again = make_events([*rows, ("fresh", "p9", "social", T0, None), ("fresh", "p9", "social", T0, 5.0)])
    result = repo.insert_events(db_session, game, again)
    assert (result.inserted, result.duplicates) == (1, 11)
    assert result.new_events.row(0, named=True)["value"] is None  # the first of a repeated key wins
    stored = repo.load_events(db_session, game)
    assert stored.height == 9
    assert stored.filter(pl.col("event_id") == "e7").row(0, named=True) == {
        "event_id": "e7", "player_id": "p1", "event_type": "purchase", "timestamp": T0 + dt.timedelta(hours=7),
        "value": 7.0, "properties": None,
    }


def test_daily_add_replace_and_players(db_session: Session, game: str, write_path: str) -> None:
    frame = pl.DataFrame(
        {
            "player_id": ["p1", "p2", "p1"],
            "date": [D1, D1, D2],
            "sessions": [1.0, 2.0, 3.0],
            "playtime_minutes": [10.0, 20.0, 30.0],
            "night_playtime_minutes": [1.0, None, None],
            "purchases": [0.0, 1.0, 0.0],
            "spend": [0.0, 2.5, 0.0],
            "social_events": [0.0, 0.0, 1.0],
            "ev_quest": [1.0, 0.0, 2.0],
        }
    )
    repo.upsert_daily(db_session, game, frame, mode="add")
    repo.upsert_daily(db_session, game, frame, mode="add")
    got = repo.load_daily(db_session, game)
    assert got["player_id"].to_list() == ["p1", "p1", "p2"]
    assert got["sessions"].to_list() == [2.0, 6.0, 4.0]
    assert got["spend"].to_list() == [0.0, 0.0, 5.0]
    assert got["night_playtime_minutes"].to_list() == [2.0, None, None]
    assert got["ev_quest"].to_list() == [2.0, 4.0, 0.0]

    replacement = pl.DataFrame({"player_id": ["p2"], "date": [D1], "sessions": [9.0], "playtime_minutes": [1.0],
                                "purchases": [0.0], "spend": [0.0], "social_events": [0.0]})
    repo.upsert_daily(db_session, game, replacement, mode="replace")
    repo.upsert_daily(db_session, game, frame, mode="add")  # p2 on D1 now comes from a daily file: left alone
    got = repo.load_daily(db_session, game)
    assert got["sessions"].to_list() == [3.0, 9.0, 9.0]
    assert got["ev_quest"].to_list() == [3.0, 6.0, 0.0]

    repo.upsert_players(db_session, game, pl.DataFrame({"player_id": ["p2", "p2"], "date": [D2, D1 - dt.timedelta(1)]}))
    seen = repo.players_first_seen(db_session, game)
    assert dict(zip(seen["player_id"], seen["first_date"], strict=True)) == {"p1": D1, "p2": D1 - dt.timedelta(1)}


def test_outcomes_upsert(db_session: Session, game: str, write_path: str) -> None:
    first = pl.DataFrame({"player_id": ["a", "b"], "ltv": [1.5, None], "churned": [0, 1]})
    repo.upsert_outcomes(db_session, game, first)
    repo.upsert_outcomes(db_session, game, pl.DataFrame({"player_id": ["b"], "ltv": [7.25]}))
    got = repo.load_outcomes(db_session, game)
    assert got.rows() == [("a", 1.5, 0, None), ("b", 7.25, 1, None)]
