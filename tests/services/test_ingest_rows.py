"""``Services.ingest_events`` given JSON rows (the HTTP route's path): read in the game's time zone inside
the ingesting transaction; one bad row rejects the batch and writes nothing, not even the game."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from unified_segmentation.errors import InvalidInput
from unified_segmentation.services.facade import Services
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.migrate import upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request, new_database):
    """A database of its own: these tests commit, and the storage tests share ``db_url`` and expect it empty."""
    url = new_database(request.param)
    upgrade(url)
    svc = Services(url)
    yield svc
    svc.close()


def test_rows_are_read_in_the_games_time_zone(services: Services) -> None:
    services.put_settings("rows_tokyo", {"timezone": "Asia/Tokyo"})
    rows = [{"player_id": "p", "event_type": "session", "timestamp": "2024-03-01T09:00:00", "value": 60},
            {"event_id": "k", "player_id": "p", "event_type": "Purchase", "timestamp": 1709251200, "value": 2.5}]
    assert services.ingest_events("rows_tokyo", rows) == {
        "game_id": "rows_tokyo", "accepted": 2, "inserted": 2, "duplicates": 0}
    assert services.ingest_events("rows_tokyo", rows)["duplicates"] == 2
    with services.Session() as s:
        events = repo.load_events(s, "rows_tokyo").sort("event_type")
        daily = repo.load_daily(s, "rows_tokyo")
    assert events["timestamp"].to_list() == [datetime(2024, 3, 1, tzinfo=UTC)] * 2  # 09:00 Tokyo; epoch 2024-03-01
    assert events["event_type"].to_list() == ["purchase", "session"]
    assert daily.select("sessions", "playtime_minutes", "purchases", "spend").row(0) == (1.0, 1.0, 1.0, 2.5)


def test_a_bad_row_rejects_the_batch_and_writes_nothing(services: Services) -> None:
    rows = [{"player_id": "p", "event_type": "session", "timestamp": "2024-03-01T09:00:00Z"},
            {"player_id": " ", "event_type": "session", "timestamp": "2024-03-01T10:00:00Z"}]
    with pytest.raises(InvalidInput) as caught:
        services.ingest_events("rows_new_game", rows)
    assert (caught.value.extra["row"], caught.value.extra["field"]) == (2, "player_id")
    with services.Session() as s:
        assert repo.get_game(s, "rows_new_game") is None
        assert repo.count_events(s, "rows_new_game") == 0
