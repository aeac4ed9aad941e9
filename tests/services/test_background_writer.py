"""The background writer of single detections: batched, one transaction per batch, flushed on demand."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from unified_segmentation.services.facade import Services
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.storage.models import AnomalyDetection

GAMES = ("bw_one", "bw_two")
AS_OF = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request, new_database):
    url = new_database(request.param)
    upgrade(url)
    svc = Services(url)
    for game in GAMES:
        svc.put_settings(game, {"timezone": "UTC"})
    yield svc
    svc.close()


def _row(game: str, i: int, surprise: float | None = None) -> dict:
    """One detection as ``Services.detect`` queues it."""
    return {
        "game_id": game, "player_id": f"p{i}", "taxonomy_version": 1, "as_of": AS_OF,
        "detected_at": AS_OF + timedelta(microseconds=i), "is_anomalous": i % 3 == 0,
        "overall_score": 0.5 + (i % 7) / 100, "surprise": float(i) if surprise is None else surprise,
        "confidence": 0.75, "context": "weekday",
        "axes": {"engagement": {"anomaly_score": 0.9, "direction": "engagement_drop", "is_anomalous": i % 3 == 0}},
    }


def _stored(svc: Services, game: str) -> list[AnomalyDetection]:
    with svc.Session() as s:
        return list(s.scalars(select(AnomalyDetection).where(AnomalyDetection.game_id == game)
                              .order_by(AnomalyDetection.id)))


def _count(svc: Services) -> int:
    with svc.Session() as s:
        return s.scalar(select(func.count()).select_from(AnomalyDetection))


def _commits(svc: Services) -> list[int]:
    seen: list[int] = []
    event.listen(svc.engine, "commit", lambda _conn: seen.append(1))
    return seen


def test_everything_queued_lands_in_order(services):
    """Four threads queue 150 detections each (two games): all stored, each thread's in its order."""
    services._write_linger_s = 0.002

    def work(t: int) -> None:
        for i in range(150):
            services._enqueue(("detections", GAMES[t % 2], [_row(GAMES[t % 2], t * 1000 + i)]))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    services.flush()
    assert _count(services) == 600
    for t in range(4):
        mine = [d for d in _stored(services, GAMES[t % 2]) if int(d.player_id[1:]) // 1000 == t]
        assert [d.player_id for d in mine] == [f"p{t * 1000 + i}" for i in range(150)]
    # what the listing endpoint shows (it flushes first), with the stored values
    listed = services.list_anomalies(GAMES[0], limit=1000)["items"]
    assert {i["player_id"] for i in listed} == {d.player_id for d in _stored(services, GAMES[0]) if d.is_anomalous}
    top = listed[0]
    assert top["surprise"] == 2148.0 and top["as_of"] == AS_OF.isoformat() and top["context"] == "weekday"
    assert top["axes"]["engagement"]["direction"] == "engagement_drop"
    assert "detections_not_persisted" not in services.counters


def test_a_burst_is_one_transaction(services):
    """Detections queued within the linger share one INSERT and one commit (both games)."""
    services._write_linger_s = 0.5
    services.flush()  # the writer is idle and nothing is queued
    commits = _commits(services)
    for i in range(40):
        services._enqueue(("detections", GAMES[i % 2], [_row(GAMES[i % 2], i)]))
    services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 100 + j) for j in range(10)]))
    services.flush()
    assert _count(services) == 50
    assert len(commits) == 1
    assert [d.player_id for d in _stored(services, GAMES[1])] == [f"p{i}" for i in range(1, 40, 2)]


def test_the_writer_waits_briefly_for_more(services):
    """A detection arriving within the linger after another goes in the same transaction."""
    services._write_linger_s = 0.3
    services.flush()
    commits = _commits(services)
    services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 1)]))
    time.sleep(0.05)
    services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 2)]))
    deadline = time.monotonic() + 5
    while _count(services) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _count(services) == 2 and len(commits) == 1


def test_flush_does_not_wait_out_the_linger(services):
    services._write_linger_s = 30.0
    services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 1)]))
    time.sleep(0.02)  # the writer holds it and waits for more
    t0 = time.perf_counter()
    services.flush()
    assert time.perf_counter() - t0 < 5
    assert _count(services) == 1
    services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 3)]))  # anomalous: listed
    assert [i["player_id"] for i in services.list_anomalies(GAMES[0])["items"]] == ["p3"]
    assert _count(services) == 2


def test_close_writes_what_is_queued(new_database):
    url = new_database("sqlite")
    upgrade(url)
    svc = Services(url)
    svc.put_settings(GAMES[0], {"timezone": "UTC"})
    svc._write_linger_s = 30.0
    for i in range(25):
        svc._enqueue(("detections", GAMES[0], [_row(GAMES[0], i)]))
    svc.close()
    again = Services(url)
    try:
        assert _count(again) == 25
    finally:
        again.close()


def test_flush_writes_left_overs_without_a_writer(services):
    services._writes.put(("detections", GAMES[0], [_row(GAMES[0], 1)]))  # queued, no writer running
    services.flush()
    assert _count(services) == 1


def test_a_bad_detection_costs_only_its_own_request(services, caplog, monkeypatch):
    """A detection the database refuses (NaN score: NOT NULL) is logged and counted; the rest land."""
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # no back-off between the retries
    services._write_linger_s = 0.5
    services.flush()
    with caplog.at_level(logging.ERROR, logger="unified_segmentation.services"):
        services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 1)]))
        services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 2, surprise=float("nan"))]))
        services._enqueue(("detections", GAMES[1], [_row(GAMES[1], 3)]))
        services.flush()
    assert sorted(d.player_id for g in GAMES for d in _stored(services, g)) == ["p1", "p3"]
    assert services.counters["detections_not_persisted"] == 1
    assert any("not stored" in r.getMessage() for r in caplog.records)
    services._enqueue(("detections", GAMES[0], [_row(GAMES[0], 4)]))  # the writer carries on
    services.flush()
    assert _count(services) == 3
