"""``load_players_daily``: a list of players' daily rows and first-seen dates, read as a key range when
the list covers most of that range and by the list otherwise, equal either way to ``load_daily`` and
``players_first_seen`` of the list; and the SQLite row-to-frame helpers of ``_bulk``."""

from __future__ import annotations

import datetime as dt
import gc

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy.orm import Session

from unified_segmentation.storage import _bulk
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.repositories import activity

D0 = dt.date(2024, 3, 1)
IDS = [f"p{i:03d}" for i in range(40)]


def _seed(session: Session, game: str) -> None:
    rows = [(p, D0 + dt.timedelta(days=d)) for i, p in enumerate(IDS) for d in range(i % 4, 6, 2)]
    frame = pl.DataFrame({
        "player_id": [p for p, _ in rows], "date": [d for _, d in rows],
        "sessions": [float(i) for i in range(len(rows))],
        "ev_quest": [float(i % 3) for i in range(len(rows))],
    })
    repo.upsert_daily(session, game, frame, mode="replace")
    # rows of a player the players table does not know, inside the range of the ids
    orphan = pl.DataFrame({"player_id": ["p010x"], "date": [D0], "sessions": [9.0]})
    repo.upsert_daily(session, game, orphan, mode="replace", update_players=False)


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The plan each ``load_players_daily`` call took: ``"range"`` or ``"list"``."""
    taken: list[str] = []
    load = activity.load_daily

    def spy(*args, **kwargs):
        taken.append("range" if kwargs.get("player_range") else "list")
        return load(*args, **kwargs)

    monkeypatch.setattr(activity, "load_daily", spy)
    return taken


@pytest.mark.parametrize(
    ("ids", "plan"),
    [
        (IDS, "range"),  # the whole game
        (IDS[5:30], "range"),  # a run of ids
        ([*reversed(IDS[:20]), IDS[3], "p010x"], "range"),  # unsorted, a repeat, the orphan's id
        (IDS[:: 4], "list"),  # sparse: a quarter of the range
        ([*IDS[10:20], "p010y", "p0195"], "range"),  # unknown ids inside the range
        (["a", *IDS, "zzz"], "range"),  # and at its ends
        (["ghost"], "range"),
        ([IDS[7]], "range"),
        ([], "list"),
    ],
)
def test_players_daily_equals_the_list_reads(db_session: Session, game: str, plans: list[str], ids, plan) -> None:
    _seed(db_session, game)
    start, end = D0 + dt.timedelta(days=1), D0 + dt.timedelta(days=4)
    daily, first = activity.load_players_daily(db_session, game, ids, start=start, end=end)
    assert plans[-1] == plan
    assert_frame_equal(daily, repo.load_daily(db_session, game, start=start, end=end, player_ids=ids))
    assert_frame_equal(first, repo.players_first_seen(db_session, game, player_ids=ids))
    if ids:
        assert first["player_id"].to_list() == sorted({p for p in ids if p in IDS})


def test_players_daily_takes_the_list_when_the_range_misses_a_known_player(
    db_session: Session, game: str, plans: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A known id the range read does not return (a collation ordering ids unlike Python) sends the list."""
    _seed(db_session, game)
    real = activity._first_seen_range
    monkeypatch.setattr(activity, "_first_seen_range",
                        lambda *a: real(*a).filter(pl.col("player_id") != IDS[3]))
    daily, first = activity.load_players_daily(db_session, game, IDS[:10], start=None, end=None)
    assert plans == ["list"]
    assert_frame_equal(daily, repo.load_daily(db_session, game, player_ids=IDS[:10]))
    assert first["player_id"].to_list() == IDS[:10]


def test_rows_frame_by_columns_or_by_rows() -> None:
    schema = {"a": pl.Float64(), "b": pl.String(), "c": pl.Int64()}
    rows = [(1, "x", 2), (None, None, None), (2.5, "é", -3)]
    assert_frame_equal(_bulk.rows_frame(rows, schema), pl.DataFrame(rows, schema=schema, orient="row"))
    assert _bulk.rows_frame([], schema).schema == pl.Schema(schema)
    lenient = [(1.0, 5, 2.0)]  # another type than declared: converted as the row constructor does
    assert_frame_equal(_bulk.rows_frame(lenient, schema), pl.DataFrame(lenient, schema=schema, orient="row"))


def test_gc_paused_nests_and_restores_the_collector() -> None:
    assert gc.isenabled()
    with _bulk.gc_paused():
        assert not gc.isenabled()
        with _bulk.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with _bulk.gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: stays off
    finally:
        gc.enable()
