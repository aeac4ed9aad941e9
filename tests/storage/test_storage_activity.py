"""Events (idempotent insertion, loading, retention), daily activity, players and outcomes."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.db import make_engine, session_factory, unit_of_work
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.storage.models import DailyActivity, EventKey, RawEvent

from .conftest import GAME, T0, make_events, run_together, simple_rollup


def _events() -> pl.DataFrame:
    h = dt.timedelta(hours=1)
    return make_events(
        [
            ("e1", "p1", "session", T0, 1200.0),
            ("e2", "p1", "purchase", T0 + h, 4.99),
            ("e3", "p1", "quest", T0 + 2 * h, None),
            ("e4", "p2", "session", T0 + 6 * h, 600.0),
            ("e5", "p2", "social", T0 + 31 * h, None),
            ("e6", "p2", "quest", T0 + 31 * h, None),
        ]
    )


def _ingest(session: Session, events: pl.DataFrame) -> repo.InsertedEvents:
    result = repo.insert_events(session, GAME, events)
    repo.upsert_daily(session, GAME, simple_rollup(result.new_events), mode="add")
    return result


def test_insert_events_is_idempotent(db_session: Session, game: str) -> None:
    events = _events()
    inserted, duplicates = _ingest(db_session, events)
    assert (inserted, duplicates) == (6, 0)
    daily_before = repo.load_daily(db_session, game)
    assert daily_before.height == 3

    again = _ingest(db_session, events)
    assert (again.inserted, again.duplicates) == (0, 6)
    assert again.new_events.height == 0
    assert_frame_equal(repo.load_daily(db_session, game), daily_before)
    assert repo.count_events(db_session, game) == 6


def test_insert_events_returns_only_new_rows(db_session: Session, game: str) -> None:
    events = _events()
    repo.insert_events(db_session, game, events.head(4))
    # e7 twice in one batch counts once; e1..e4 are already stored
    extra = make_events([("e7", "p3", "session", T0, 60.0), ("e7", "p3", "session", T0, 60.0)])
    result = repo.insert_events(db_session, game, pl.concat([events, extra]))
    assert (result.inserted, result.duplicates) == (3, 5)
    assert sorted(result.new_events["event_id"].to_list()) == ["e5", "e6", "e7"]
    assert result.new_events.columns == list(repo.EVENTS_SCHEMA)


def test_events_are_scoped_per_game(db_session: Session, game: str) -> None:
    repo.ensure_game(db_session, "other_game", {})
    repo.insert_events(db_session, game, _events())
    assert tuple(repo.insert_events(db_session, "other_game", _events())) == (6, 0)


def test_load_events_roundtrip(db_session: Session, game: str) -> None:
    events = _events().with_columns(
        pl.when(pl.col("event_id") == "e5").then(pl.lit('{"kind": "guild", "n": 2}')).alias("properties")
    )
    repo.insert_events(db_session, game, events)
    loaded = repo.load_events(db_session, game)
    assert loaded.schema == pl.Schema(repo.EVENTS_SCHEMA)
    expected = events.sort("player_id", "timestamp", "event_id")
    assert_frame_equal(loaded.drop("properties"), expected.drop("properties"))
    props = dict(zip(loaded["event_id"], loaded["properties"], strict=True))
    assert props["e1"] is None
    assert json.loads(props["e5"]) == {"kind": "guild", "n": 2}
    window = repo.load_events(
        db_session, game, start=T0 + dt.timedelta(hours=1), end=T0 + dt.timedelta(hours=31)
    )
    assert window["event_id"].to_list() == ["e2", "e3", "e4"]
    assert repo.load_events(db_session, game, player_ids=["p2"])["event_id"].to_list() == ["e4", "e5", "e6"]


def test_naive_and_non_utc_timestamps_are_stored_as_utc(db_session: Session, game: str) -> None:
    local = pl.DataFrame(
        {
            "event_id": ["tz1"],
            "player_id": ["p9"],
            "event_type": ["session"],
            "timestamp": [dt.datetime(2024, 3, 1, 9, 30)],
        }
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("Europe/Berlin"))
    repo.insert_events(db_session, game, local)
    stored = repo.load_events(db_session, game)["timestamp"].item()
    assert stored == dt.datetime(2024, 3, 1, 8, 30, tzinfo=dt.UTC)
    orm_ts = db_session.scalar(select(RawEvent.ts).where(RawEvent.event_id == "tz1"))
    assert orm_ts == dt.datetime(2024, 3, 1, 8, 30, tzinfo=dt.UTC)


def test_large_batch_uses_the_bulk_path(db_session: Session, game: str) -> None:
    n = 5_000  # above the small-batch threshold: staging table on PostgreSQL
    events = make_events(
        [(f"b{i}", f"p{i % 37}", "session", T0 + dt.timedelta(seconds=i), 60.0) for i in range(n)]
    )
    assert tuple(repo.insert_events(db_session, game, events)) == (n, 0)
    half = pl.concat([events.slice(0, n // 2), make_events([("fresh", "p1", "social", T0, None)])])
    result = repo.insert_events(db_session, game, half)
    assert (result.inserted, result.duplicates) == (1, n // 2)
    assert result.new_events["event_id"].to_list() == ["fresh"]


def test_purge_keeps_keys(db_session: Session, game: str) -> None:
    events = _events()
    repo.insert_events(db_session, game, events)
    assert not repo.events_purged(db_session, game)
    purged = repo.purge_events(db_session, game, before=T0 + dt.timedelta(hours=24))
    assert purged == 4
    assert repo.events_purged(db_session, game)
    assert repo.count_events(db_session, game) == 2
    assert db_session.scalar(select(func.count()).select_from(EventKey)) == 4
    # re-ingesting the purged events is still a duplicate
    assert tuple(repo.insert_events(db_session, game, events)) == (0, 6)


def test_purge_expired_events(db_session: Session, game: str) -> None:
    repo.insert_events(db_session, game, _events())
    assert repo.purge_expired_events(db_session, game, retention_days=400) == 0
    # newest event is T0 + 31 h; one day of retention keeps events from T0 + 7 h on
    assert repo.purge_expired_events(db_session, game, retention_days=1) == 4


def test_upsert_daily_add_and_replace(db_session: Session, game: str) -> None:
    d = dt.date(2024, 3, 1)
    base = pl.DataFrame(
        {
            "player_id": ["p1", "p2"],
            "date": [d, d],
            "sessions": [1.0, 2.0],
            "playtime_minutes": [10.0, 20.0],
            "night_playtime_minutes": [1.0, None],
            "purchases": [0.0, 1.0],
            "spend": [0.0, 9.99],
            "social_events": [0.0, 3.0],
            "ev_quest": [2.0, 0.0],
            "ev_raid": [0.0, 1.0],
        }
    )
    assert repo.upsert_daily(db_session, game, base, mode="add") == 2
    assert repo.upsert_daily(db_session, game, base, mode="add") == 2
    got = repo.load_daily(db_session, game)
    assert got["sessions"].to_list() == [2.0, 4.0]
    assert got["spend"].to_list() == [0.0, 2 * 9.99]
    assert got["night_playtime_minutes"].to_list() == [2.0, None]
    assert got["social_sessions"].to_list() == [None, None]
    assert got["refunds"].to_list() == [0.0, 0.0]
    assert got["ev_quest"].to_list() == [4.0, 0.0]
    assert got["ev_raid"].to_list() == [0.0, 2.0]
    assert got.columns[:12] == ["player_id", "date", *repo.DAILY_COLUMNS]

    # a daily file replaces p1's roll-up; later events do not add into a daily-file row
    replacement = pl.DataFrame(
        {
            "player_id": ["p1"],
            "date": [d],
            "sessions": [7.0],
            "playtime_minutes": [70.0],
            "purchases": [0.0],
            "spend": [0.0],
            "social_events": [0.0],
        }
    )
    repo.upsert_daily(db_session, game, replacement, mode="replace")
    repo.upsert_daily(db_session, game, base, mode="add")
    got = repo.load_daily(db_session, game)
    p1 = got.filter(pl.col("player_id") == "p1").row(0, named=True)
    assert (p1["sessions"], p1["playtime_minutes"], p1["night_playtime_minutes"]) == (7.0, 70.0, None)
    assert "ev_quest" not in got.columns  # no stored player-day has quests any more
    assert got.filter(pl.col("player_id") == "p2")["sessions"].item() == 6.0
    sources = dict(db_session.execute(select(DailyActivity.player_id, DailyActivity.source)).all())
    assert sources == {"p1": "daily", "p2": "events"}


def test_upsert_daily_sums_duplicate_player_days(db_session: Session, game: str) -> None:
    d = dt.date(2024, 3, 2)
    frame = pl.DataFrame(
        {"player_id": ["p1", "p1"], "date": [d, d], "sessions": [1.0, 2.0], "ev_x": [1.0, 1.0]}
    )
    assert repo.upsert_daily(db_session, game, frame, mode="add") == 1
    got = repo.load_daily(db_session, game)
    assert (got["sessions"].item(), got["ev_x"].item()) == (3.0, 2.0)


def test_load_daily_filters(db_session: Session, game: str) -> None:
    events = _events()
    _ingest(db_session, events)
    d1, d2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    assert repo.load_daily(db_session, game, start=d2)["date"].to_list() == [d2]
    assert repo.load_daily(db_session, game, end=d1)["player_id"].to_list() == ["p1", "p2"]
    only = repo.load_daily(db_session, game, player_ids=["p2"])
    assert only["player_id"].to_list() == ["p2", "p2"]
    # a list in any order, with repeats and unknown ids: each stored row once, by player then date
    listed = repo.load_daily(db_session, game, player_ids=["p2", "ghost", "p1", "p2"])
    assert listed.select("player_id", "date").rows() == [("p1", d1), ("p2", d1), ("p2", d2)]
    assert_frame_equal(listed, repo.load_daily(db_session, game))
    assert repo.load_daily(db_session, game, start=d2, player_ids=["p1", "p2"])["player_id"].to_list() == ["p2"]
    assert repo.load_daily(db_session, game, player_ids=[]).height == 0
    empty = repo.load_daily(db_session, "no_such_game")
    assert empty.height == 0 and empty.schema["date"] == pl.Date


def test_load_daily_player_range(db_session: Session, game: str) -> None:
    """A run of ids (``player_range``), alone or with a list; rows by player then date, custom counts
    expanded (0 where a row has none), dates as Date, on both backends."""
    d = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(3)]
    ids = ["b", "a", "p9", "c", "p10", "b2"]
    rows = [(p, day) for p in ids for day in reversed(d)]
    frame = pl.DataFrame(
        {
            "player_id": [p for p, _ in rows],
            "date": [day for _, day in rows],
            "sessions": [float(i) for i in range(len(rows))],
            "ev_quest": [float(i % 3) for i in range(len(rows))],
            "ev_raid": [1.5 if p == "c" else 0.0 for p, _ in rows],
        }
    )
    repo.upsert_daily(db_session, game, frame, mode="replace")
    expected = frame.sort("player_id", "date").select("player_id", "date", "sessions", "ev_quest", "ev_raid")

    got = repo.load_daily(db_session, game, start=d[1], player_range=("b", "p10"))
    want = expected.filter(pl.col("player_id").is_in(["b", "b2", "c", "p10"]) & (pl.col("date") >= d[1]))
    assert got.schema["date"] == pl.Date
    assert got.columns == ["player_id", "date", *repo.DAILY_COLUMNS, "ev_quest", "ev_raid"]
    assert_frame_equal(got.select(want.columns), want)
    assert got["playtime_minutes"].to_list() == [0.0] * want.height
    assert got["night_playtime_minutes"].to_list() == [None] * want.height

    both = repo.load_daily(db_session, game, player_ids=["c", "b", "zz"], player_range=("b", "p10"))
    assert_frame_equal(both.select(want.columns), expected.filter(pl.col("player_id").is_in(["b", "c"])))
    assert both["ev_raid"].to_list() == [0.0] * 3 + [1.5] * 3

    assert repo.load_daily(db_session, game, player_range=("q", "z")).height == 0
    every = repo.load_daily(db_session, game)
    assert_frame_equal(every.select(want.columns), expected)


def test_range_read_planner_settings_end_with_the_transaction(
    db_sessionmaker: sessionmaker[Session], game: str
) -> None:
    """The range read steers the PostgreSQL planner to the key for its own transaction only."""
    with db_sessionmaker() as session:
        if session.get_bind().dialect.name != "postgresql":
            return
        repo.load_daily(session, game, player_range=("a", "b"))
        assert session.execute(text("SHOW enable_seqscan")).scalar_one() == "off"
        session.rollback()
        assert session.execute(text("SHOW enable_seqscan")).scalar_one() == "on"
        assert session.execute(text("SHOW enable_bitmapscan")).scalar_one() == "on"


def test_binary_copy_read_decodes_every_type(db_session: Session, game: str) -> None:
    """``read_binary`` returns what the CSV read returns: NULL floats and texts stay null, negative
    and extreme values, non-ASCII text and empty strings survive; a wrong schema is an error."""
    from unified_segmentation.storage import _bulk

    if _bulk.dialect(db_session) != "postgresql":
        return
    query = (
        "SELECT * FROM (VALUES ('é☃'::text, -3::int4, -2.5e-300::float8, NULL::float8, 7::int8, NULL::text),"
        " (''::text, 2147483647::int4, 'infinity'::float8, 1.0::float8, -9007199254740993::int8, 'x'::text),"
        " (NULL::text, 0::int4, 0.1::float8, -0.0::float8, 0::int8, '{\"a\": 1}'::text)) AS t"
    )
    schema = {"s": pl.String(), "i": pl.Int32(), "f": pl.Float64(), "g": pl.Float64(), "l": pl.Int64(),
              "j": pl.String()}
    got = _bulk.read_binary(db_session, query, None, schema)
    want = pl.DataFrame(
        {"s": ["é☃", "", None], "i": [-3, 2147483647, 0], "f": [-2.5e-300, float("inf"), 0.1],
         "g": [None, 1.0, -0.0], "l": [7, -9007199254740993, 0], "j": [None, "x", '{"a": 1}']},
        schema=schema,
    )
    assert_frame_equal(got, want)
    assert_frame_equal(_bulk.read_query(db_session, query, None, schema), want)
    assert _bulk.read_binary(db_session, query + " WHERE false", None, schema).shape == (0, 6)
    with pytest.raises(ValueError, match="does not match the schema"):
        _bulk.read_binary(db_session, query, None, {**schema, "l": pl.Int32()})
    with pytest.raises(TypeError, match="does not decode"):
        _bulk.read_binary(db_session, query, None, {**schema, "i": pl.Date()})


def test_sorted_by_player_date_sorts_only_when_needed() -> None:
    from unified_segmentation.storage.repositories.activity import _sorted_by_player_date

    d = [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]
    ordered = pl.DataFrame({"player_id": ["a", "a", "b", "b10", "b2"], "date": [d[0], d[1], d[1], d[0], d[0]]})
    assert _sorted_by_player_date(ordered) is ordered
    for shuffled in (ordered.reverse(), ordered[[1, 0, 2, 3, 4]], ordered[[0, 1, 2, 4, 3]]):
        assert_frame_equal(_sorted_by_player_date(shuffled), ordered)
    repeated = ordered[[0, 0, 1]]  # a repeated (player, date) is not "in order": sorted, stays equal
    assert_frame_equal(_sorted_by_player_date(repeated), ordered[[0, 0, 1]])


def test_players_first_seen(db_session: Session, game: str) -> None:
    _ingest(db_session, _events())
    first = repo.players_first_seen(db_session, game)
    assert first.to_dicts() == [
        {"player_id": "p1", "first_date": dt.date(2024, 3, 1)},
        {"player_id": "p2", "first_date": dt.date(2024, 3, 1)},
    ]
    earlier = pl.DataFrame({"player_id": ["p2"], "date": [dt.date(2024, 2, 1)]})
    repo.upsert_players(db_session, game, earlier)
    assert repo.players_first_seen(db_session, game, ["p2"])["first_date"].item() == dt.date(2024, 2, 1)
    listed = repo.players_first_seen(db_session, game, ["p2", "ghost", "p1", "p2"])
    assert listed.rows() == [("p1", dt.date(2024, 3, 1)), ("p2", dt.date(2024, 2, 1))]
    assert repo.player_exists(db_session, game, "p1")
    assert not repo.player_exists(db_session, game, "ghost")


def test_outcomes_upsert_and_load(db_session: Session, game: str) -> None:
    first = pl.DataFrame(
        {"player_id": ["p1", "p2"], "ltv": [10.0, None], "churned": [0, 1], "support_tickets": [1.0, 0.0]}
    )
    assert repo.upsert_outcomes(db_session, game, first) == 2
    # a later file with only ltv keeps churned / support_tickets
    repo.upsert_outcomes(db_session, game, pl.DataFrame({"player_id": ["p2"], "ltv": [3.5]}))
    got = repo.load_outcomes(db_session, game)
    assert got.schema == pl.Schema(
        {"player_id": pl.String, "ltv": pl.Float64, "churned": pl.Int8, "support_tickets": pl.Float64}
    )
    assert got.to_dicts() == [
        {"player_id": "p1", "ltv": 10.0, "churned": 0, "support_tickets": 1.0},
        {"player_id": "p2", "ltv": 3.5, "churned": 1, "support_tickets": 0.0},
    ]
    assert repo.load_outcomes(db_session, game, ["p2"]).height == 1


def test_failed_unit_of_work_writes_nothing(db_sessionmaker: sessionmaker[Session], game: str) -> None:
    with pytest.raises(RuntimeError), unit_of_work(db_sessionmaker) as session:
        _ingest(session, _events())
        assert repo.count_events(session, GAME) == 6
        raise RuntimeError("validation failed after the insert")
    with unit_of_work(db_sessionmaker) as session:
        assert repo.count_events(session, GAME) == 0
        assert repo.load_daily(session, GAME).height == 0
        assert repo.players_first_seen(session, GAME).height == 0
        # and the keys were not burnt: the same events go in afterwards
        assert tuple(repo.insert_events(session, GAME, _events())) == (6, 0)


def test_concurrent_ingestion_never_double_counts(empty_db_url: str) -> None:
    """Two workers ingest overlapping batches at once, for real (committed transactions)."""
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    sessions = session_factory(engine)
    n = 3_000
    events = make_events(
        [(f"c{i}", f"p{i % 50}", "session", T0 + dt.timedelta(seconds=i), 60.0) for i in range(n)]
    )
    batches = [events.slice(0, 2_000), events.slice(1_000, 2_000)]  # 1,000 events in both
    with unit_of_work(sessions) as session:
        repo.ensure_game(session, GAME, {})

    def work(batch: pl.DataFrame) -> int:
        with unit_of_work(sessions) as session:
            return _ingest(session, batch).inserted

    try:
        results = run_together(work, batches)
        assert sum(results) == n
        with unit_of_work(sessions) as session:
            assert repo.count_events(session, GAME) == n
            assert repo.load_daily(session, GAME)["sessions"].sum() == n
    finally:
        engine.dispose()
