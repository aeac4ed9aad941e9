"""The single-player request path (two indexed reads, array features) answers exactly what the batch
path (``load_daily`` + Polars window features) answers for the same player, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from unified_segmentation.errors import GameNotFound, NoTaxonomy, PlayerNotFound
from unified_segmentation.ingest import read_events
from unified_segmentation.services.facade import Services
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.synth import PlantedSpec, generate_daily, generate_game

EVENTS_GAME = "req_events"
DAILY_GAME = "req_daily"
AS_OF = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # mid-day: today counts with its elapsed fraction


def _same(a, b, path="") -> None:
    """Equal structures; floats within rtol 1e-9."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def svc(request, new_database):
    url = new_database(request.param)
    upgrade(url)
    services = Services(url)
    game = generate_game(PlantedSpec(n_players=600, seed=5, as_of=AS_OF))
    services.ingest_events(EVENTS_GAME, game.events)
    services.calibrate(EVENTS_GAME, as_of=AS_OF, force=True)
    daily = generate_daily(n_players=600, seed=6)
    services.put_settings(DAILY_GAME, {"default_as_of": daily.as_of.isoformat()})
    services.ingest_daily(DAILY_GAME, daily.daily)
    services.calibrate(DAILY_GAME, force=True)
    # a newcomer first seen yesterday: known in the current window, not in the typical one
    newcomer = [{"player_id": "newcomer", "event_type": kind, "timestamp": (AS_OF - timedelta(hours=h)).isoformat(),
                 "value": v} for kind, h, v in (("session", 30, 1200.0), ("purchase", 29, 4.99), ("session", 2, 600.0))]
    services.ingest_events(EVENTS_GAME, read_events(newcomer))
    yield services, game, daily
    services.close()


def _players(ids: list[str], n: int) -> list[str]:
    return sorted(ids)[:: max(1, len(ids) // n)][:n]


def test_categorize_equals_the_batch_path(svc):
    services, game, daily = svc
    ids = ["test_player", "newcomer", *_players(game.truth["player_id"].to_list(), 40)]
    for pid in ids:
        one = services.categorize(EVENTS_GAME, pid, as_of=AS_OF)
        batch = services.categorize_batch(EVENTS_GAME, [pid], as_of=AS_OF)["profiles"][0]
        _same(batch, one, pid)
    for pid in _players(daily.truth["player_id"].to_list(), 25):  # daily rows: some inputs NULL
        one = services.categorize(DAILY_GAME, pid)
        _same(services.categorize_batch(DAILY_GAME, [pid])["profiles"][0], one, pid)
        mon = one["axes"]["monetization"]
        assert mon["primary_segment"] in {s["segment_name"] for s in mon["memberships"]}


def test_detect_equals_the_batch_path(svc):
    services, game, daily = svc
    ids = ["test_player", "newcomer", *_players(game.truth["player_id"].to_list(), 40)]
    flagged = set()
    for pid in ids:
        one = services.detect(EVENTS_GAME, pid, as_of=AS_OF)
        batch = services.detect_batch(EVENTS_GAME, [pid], as_of=AS_OF)["detections"][0]
        _same(batch, one, pid)
        if one["is_anomalous"]:
            flagged.add(pid)
    for pid in _players(daily.truth["player_id"].to_list(), 25):
        _same(services.detect_batch(DAILY_GAME, [pid])["detections"][0], services.detect(DAILY_GAME, pid), pid)
    assert len(flagged) < len(ids) / 2  # a planted game is mostly normal players
    # single detections are persisted behind the answer; listing flushes the writer first
    listed = {item["player_id"] for item in services.list_anomalies(EVENTS_GAME, limit=1000)["items"]}
    assert flagged <= listed


def test_errors_name_what_is_missing(svc):
    services, *_ = svc
    with pytest.raises(PlayerNotFound, match="nobody"):
        services.categorize(EVENTS_GAME, "nobody", as_of=AS_OF)
    with pytest.raises(PlayerNotFound, match="newcomer"):  # not known yet a week earlier
        services.categorize(EVENTS_GAME, "newcomer", as_of=AS_OF - timedelta(days=7))
    with pytest.raises(GameNotFound, match="no_such_game"):
        services.detect("no_such_game", "test_player")
    services.ingest_events("uncalibrated", read_events(
        [{"player_id": "a", "event_type": "session", "timestamp": AS_OF.isoformat(), "value": 60.0}]))
    with pytest.raises(NoTaxonomy, match="uncalibrated"):
        services.categorize("uncalibrated", "a")


def test_a_settings_change_moves_the_window_read(svc):
    """Reads use the window of the settings last seen and re-read when the stored settings differ."""
    services, _game, daily = svc
    pid = _players(daily.truth["player_id"].to_list(), 3)[1]
    services.categorize(DAILY_GAME, pid)  # the settings as they are now are remembered
    before = services.get_settings(DAILY_GAME)["default_as_of"]
    moved = (datetime.fromisoformat(before) - timedelta(days=10)).isoformat()
    services.put_settings(DAILY_GAME, {"default_as_of": moved})
    try:
        one = services.categorize(DAILY_GAME, pid)
        assert datetime.fromisoformat(one["as_of"]) == datetime.fromisoformat(moved)
        _same(services.categorize_batch(DAILY_GAME, [pid])["profiles"][0], one, pid)
        _same(services.detect_batch(DAILY_GAME, [pid])["detections"][0], services.detect(DAILY_GAME, pid), pid)
    finally:
        services.put_settings(DAILY_GAME, {"default_as_of": before})


def test_a_dropped_read_connection_is_replaced(svc, monkeypatch):
    """A read connection the server dropped (a restart) fails once inside the call, which reads again on a
    fresh connection; disposing of the engine closes the idle ones."""
    services, game, _daily = svc
    reads = services._read_connections()
    first = services.categorize(EVENTS_GAME, "test_player", as_of=AS_OF)
    assert len(reads._idle) == 1
    connects = []
    connect = reads._connect
    monkeypatch.setattr(reads, "_connect", lambda: connects.append(1) or connect())
    if reads.kind == "postgresql":
        with services.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    _same(first, services.categorize(EVENTS_GAME, "test_player", as_of=AS_OF))
    assert len(connects) == (1 if reads.kind == "postgresql" else 0)
    services.engine.dispose()
    assert not reads._idle
    _same(first, services.categorize(EVENTS_GAME, "test_player", as_of=AS_OF))


def _exactly_as_one_by_one(services, many, one, game_id: str, ids: list[str], **kw) -> list:
    """``many(game_id, ids)`` answers each id exactly (JSON bytes; same error and message) as ``one`` does."""
    got = many(game_id, ids, **kw)
    assert len(got) == len(ids)
    for pid, answer in zip(ids, got, strict=True):
        try:
            want = one(game_id, pid, **kw)
        except PlayerNotFound as exc:
            assert isinstance(answer, PlayerNotFound) and str(answer) == str(exc), pid
            continue
        assert isinstance(answer, dict), f"{pid}: {answer!r}"
        assert orjson.dumps(answer) == orjson.dumps(want), pid
    return got


def test_many_players_at_once_answer_exactly_as_one_by_one(svc):
    """``categorize_many`` / ``detect_many`` (the micro-batched request path) read and score several players
    together; each answer is byte for byte the one-player answer, whatever else is in the batch: 120 players,
    so segments hold >= 20 of them (no game-wide shift is estimated from a request batch), a newcomer unknown
    in the typical window, a player not known yet by ``as_of`` and one the game does not know."""
    services, game, daily = svc
    ids = ["test_player", "newcomer", "nobody", *_players(game.truth["player_id"].to_list(), 120)]
    for many, one in ((services.categorize_many, services.categorize), (services.detect_many, services.detect)):
        got = _exactly_as_one_by_one(services, many, one, EVENTS_GAME, ids, as_of=AS_OF)
        assert sum(isinstance(a, dict) for a in got) == len(ids) - 1
        early = _exactly_as_one_by_one(services, many, one, EVENTS_GAME, ["newcomer", "test_player"],
                                       as_of=AS_OF - timedelta(days=7))
        assert isinstance(early[0], PlayerNotFound) and "by 2026-02-23" in str(early[0])
        _exactly_as_one_by_one(services, many, one, DAILY_GAME, _players(daily.truth["player_id"].to_list(), 60))
    with pytest.raises(GameNotFound, match="no_such_game"):
        services.detect_many("no_such_game", ["a", "b"])
    with pytest.raises(NoTaxonomy, match="uncalibrated_many"):
        services.ingest_events("uncalibrated_many", read_events(
            [{"player_id": "a", "event_type": "session", "timestamp": AS_OF.isoformat(), "value": 60.0}]))
        services.categorize_many("uncalibrated_many", ["a", "b"])


def test_many_players_rows_equal_one_players_rows(svc):
    """The one-statement read of several players returns each player's rows as the one-player read does."""
    from unified_segmentation.storage.repositories import requests as rrepo

    services, game, _daily = svc
    reads = services._read_connections()
    ids = [*_players(game.truth["player_id"].to_list(), 30), "nobody", "newcomer"]
    start, end = (AS_OF - timedelta(days=40)).date(), AS_OF.date()
    state, rows = reads.run(lambda cur: rrepo.request_read_many(cur, reads.kind, EVENTS_GAME, ids, start, end))
    assert state.active_version is not None and state.first_seen is None
    assert list(rows.players) == [p for p in ids if p != "nobody"]
    for code, pid in enumerate(rows.players):
        one_state, one = reads.run(lambda cur, pid=pid: rrepo.request_read(cur, reads.kind, EVENTS_GAME, pid, start,
                                                                           end))
        mine = rows.codes == code
        assert rows.first_seen[code] == one.first_seen[0]
        assert rows.days[mine].tolist() == one.days.tolist()
        for name, values in one.values.items():
            assert np.array_equal(rows.values[name][mine], values, equal_nan=True), (pid, name)
    assert reads.run(lambda cur: rrepo.request_read_many(cur, reads.kind, "no_game", ids, start, end)) == (None, None)
    assert reads.run(lambda cur: rrepo.request_read_many(cur, reads.kind, EVENTS_GAME, ["x", "y"], start, end)
                     )[1] is None
