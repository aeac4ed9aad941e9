"""``store_events`` (ingestion as one unit) stores exactly what the step-by-step path stores.

The reference is the step-by-step path: ``insert_events``, ``events_to_daily`` of the new rows,
``upsert_daily(mode="add")``, ``touch_data_changed``. Each scenario runs both into two games of the
same database and compares events, daily rows, players and the games' ``newest_event_at``: a fresh
batch (PostgreSQL: the one-statement path), a re-sent one, one overlapping stored and purged keys (the
roll-up redone for the new rows only), game-specific event types (``custom`` counts merged), a
player-day from a daily file (left alone), and the staged path (threshold forced to 0).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy.orm import Session

from unified_segmentation.features.daily import events_to_daily
from unified_segmentation.storage import _bulk
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.db import make_engine, session_factory, unit_of_work
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.storage.models import Game

from .conftest import T0, make_events, run_together

REF, NEW = "g_reference", "g_store"


@pytest.fixture(params=["statement", "staged"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "staged":
        monkeypatch.setattr(_bulk, "SMALL_STATEMENT_ROWS", 0)
    return request.param


@pytest.fixture
def games(db_session: Session) -> None:
    for g in (REF, NEW):
        repo.ensure_game(db_session, g, {"timezone": "Europe/Paris"})


def _reference(session: Session, game_id: str, events: pl.DataFrame) -> tuple[int, int]:
    result = repo.insert_events(session, game_id, events)
    if result.inserted:
        repo.upsert_daily(session, game_id, events_to_daily(result.new_events, timezone="Europe/Paris"))
        repo.touch_data_changed(session, game_id, newest_event_at=result.new_events["timestamp"].max())
    return result.inserted, result.duplicates


def _both(session: Session, events: pl.DataFrame) -> repo.StoredEvents:
    expected = _reference(session, REF, events)
    stored = repo.store_events(session, NEW, events, timezone="Europe/Paris")
    assert (stored.inserted, stored.duplicates) == expected
    assert stored.accepted == events.height
    return stored


def _assert_same(session: Session) -> None:
    session.expire_all()
    assert repo.load_events(session, NEW).equals(repo.load_events(session, REF))
    assert repo.load_daily(session, NEW).equals(repo.load_daily(session, REF))
    assert repo.players_first_seen(session, NEW).equals(repo.players_first_seen(session, REF))
    assert _players(session, NEW) == _players(session, REF)
    assert session.get(Game, NEW).newest_event_at == session.get(Game, REF).newest_event_at


def _players(session: Session, game_id: str) -> list[tuple]:
    p = _bulk.param(_bulk.dialect(session))
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute(f"SELECT player_id, first_seen, last_seen FROM players WHERE game_id = {p} ORDER BY player_id",
                       (game_id,))
        return [tuple(r) for r in cursor.fetchall()]


def _rows(start: int, stop: int, hours: int = 5) -> list[tuple[str, str, str, dt.datetime, float | None]]:
    kinds = ["session", "purchase", "social", "quest", "session", "refund", "boss_kill"]
    return [
        (f"e{i}", f"p{i % 4}", kinds[i % len(kinds)], T0 + dt.timedelta(hours=hours * i, minutes=i),
         float(60 * i) if i % 3 else None)
        for i in range(start, stop)
    ]


def test_fresh_resent_and_overlapping_batches(db_session: Session, games: None, write_path: str) -> None:
    first = _both(db_session, make_events(_rows(0, 30)))
    assert (first.inserted, first.newest_event_at is not None) == (30, True)
    _assert_same(db_session)

    again = _both(db_session, make_events(_rows(0, 30)))  # a re-sent batch changes nothing
    assert (again.inserted, again.newest_event_at) == (0, None)
    _assert_same(db_session)

    for g in (REF, NEW):
        repo.purge_events(db_session, g, before=T0 + dt.timedelta(hours=20))  # e0-e3: keys kept
    overlapping = make_events([*_rows(2, 40), ("e50", "p9", "session", T0, 600.0), ("e50", "p9", "social", T0, None)])
    mixed = _both(db_session, overlapping)
    assert (mixed.inserted, mixed.duplicates) == (11, 29)  # e30-e39 and e50 (once) are new
    _assert_same(db_session)


def test_events_roll_into_event_days_only(db_session: Session, games: None, write_path: str) -> None:
    file_day = pl.DataFrame({
        "player_id": ["p1"], "date": [dt.date(2024, 3, 1)], "sessions": [9.0], "playtime_minutes": [90.0],
        "purchases": [0.0], "spend": [0.0], "social_events": [0.0],
    })
    for g in (REF, NEW):
        repo.upsert_daily(db_session, g, file_day, mode="replace")
    _both(db_session, make_events(_rows(0, 12)))
    _both(db_session, make_events(_rows(12, 20)))
    _assert_same(db_session)
    kept = repo.load_daily(db_session, NEW).filter(pl.col("player_id") == "p1", pl.col("date") == dt.date(2024, 3, 1))
    assert kept["sessions"].to_list() == [9.0]


def test_newest_event_never_moves_back(db_session: Session, games: None, write_path: str) -> None:
    _both(db_session, make_events(_rows(10, 20)))
    older = _both(db_session, make_events(_rows(0, 10)))
    assert older.inserted == 10
    db_session.expire_all()
    assert db_session.get(Game, NEW).newest_event_at == _bulk.as_utc(max(r[3] for r in _rows(10, 20)))
    _assert_same(db_session)


def test_empty_and_unordered_frames(db_session: Session, games: None) -> None:
    assert repo.store_events(db_session, NEW, make_events([]), timezone="UTC").inserted == 0
    frame = make_events(_rows(0, 8)).reverse().with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    stored = repo.store_events(db_session, NEW, frame, timezone="Europe/Paris")
    assert stored.inserted == 8
    _reference(db_session, REF, frame)
    _assert_same(db_session)


def test_game_time_settings(db_session: Session) -> None:
    assert repo.game_time_settings(db_session, "g_nowhere") is None
    repo.ensure_game(db_session, "g_tz", {"timezone": "Asia/Kolkata", "default_as_of": "2024-03-01T00:00:00+00:00"})
    assert repo.game_time_settings(db_session, "g_tz") == ("Asia/Kolkata", "2024-03-01T00:00:00+00:00")
    repo.ensure_game(db_session, "g_bare", {})
    assert repo.game_time_settings(db_session, "g_bare") == ("UTC", None)


def test_sqlite_and_postgresql_statement_paths_store_the_same_text(db_session: Session, games: None) -> None:
    """The one-statement paths write events, datetimes and dates exactly as the ORM / frame writers do
    (compared through the stored text on SQLite, the typed values on PostgreSQL)."""
    rows = [(f"x{i}", "ü", "session", T0 + dt.timedelta(microseconds=7 * i, days=i), 1.5 * i) for i in range(5)]
    _both(db_session, make_events(rows))
    with _bulk.dbapi_cursor(db_session) as cursor:
        cursor.execute(
            "SELECT game_id, event_id, player_id, event_type, ts, value, properties FROM raw_events "
            "WHERE game_id IN ('g_reference', 'g_store') ORDER BY event_id, game_id"
        )
        stored = cursor.fetchall()
        cursor.execute("SELECT game_id, newest_event_at, data_changed_at IS NOT NULL FROM games "
                       "WHERE game_id IN ('g_reference', 'g_store') ORDER BY game_id")
        touched = cursor.fetchall()
    assert [r[1:] for r in stored[0::2]] == [r[1:] for r in stored[1::2]]
    assert touched[0][1:] == touched[1][1:]


@pytest.mark.parametrize("size", [2_000, 200])
def test_concurrent_store_events_never_double_count(empty_db_url: str, size: int) -> None:
    """Four committed transactions store overlapping batches at once (one-statement path; 200: also
    batches that find some of their events stored, whose roll-up is redone): every event is stored
    and rolled up exactly once, every player's dates cover exactly its days."""
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    sessions = session_factory(engine)
    n = 3 * size
    events = make_events(
        [(f"c{i}", f"p{i % 50}", "session", T0 + dt.timedelta(minutes=7 * i), 60.0) for i in range(n)]
    )
    step = size // 2
    batches = [events.slice(k * step, size) for k in range(4)] + [events.slice(n - size, size)]
    with unit_of_work(sessions) as session:
        repo.ensure_game(session, "g_conc", {})

    def work(batch: pl.DataFrame) -> int:
        with unit_of_work(sessions) as session:
            return repo.store_events(session, "g_conc", batch, timezone="Europe/Paris").inserted

    try:
        results = run_together(work, batches)
        assert sum(results) == n
        with unit_of_work(sessions) as session:
            assert repo.count_events(session, "g_conc") == n
            daily = repo.load_daily(session, "g_conc")
            expected = events_to_daily(events, timezone="Europe/Paris")
            assert daily["sessions"].to_list() == expected["sessions"].to_list()  # counts: exact
            assert_frame_equal(daily.select(expected.columns), expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
            spans = daily.group_by("player_id").agg(first=pl.col("date").min(), last=pl.col("date").max())
            assert sorted(_players(session, "g_conc")) == sorted(
                (p, str(first), str(last)) if _bulk.dialect(session) == "sqlite" else (p, first, last)
                for p, first, last in spans.rows()
            )
            assert session.get(Game, "g_conc").newest_event_at == events["timestamp"].max()
    finally:
        engine.dispose()


def test_data_changed_at_is_taken_at_write_time(db_session: Session, games: None, write_path: str) -> None:
    """``data_changed_at`` is read from the clock under the lock, not when the batch arrived (a calibration
    between the two must not look newer than the data); ``ingested_at`` may be given."""
    arrived = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    before = dt.datetime.now(dt.UTC)
    assert repo.store_events(db_session, NEW, make_events(_rows(0, 5)), timezone="UTC", ingested_at=arrived).inserted
    db_session.expire_all()
    assert db_session.get(Game, NEW).data_changed_at >= before
    with _bulk.dbapi_cursor(db_session) as cursor:
        p = _bulk.param(_bulk.dialect(db_session))
        cursor.execute(f"SELECT count(*) FROM raw_events WHERE game_id = {p} AND ingested_at = {p}",
                       (NEW, _bulk.datetime_param(_bulk.dialect(db_session), arrived)))
        assert cursor.fetchone()[0] == 5
