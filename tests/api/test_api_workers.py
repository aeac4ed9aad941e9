"""State that must hold across worker processes, modelled as two apps with their own ``Services`` on one
database (SQLite and PostgreSQL through the real migrations): calibration jobs visible from either, a
job whose worker stopped reported failed, and one per-key rate limit counted for both."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from unified_segmentation.api.jobs import CalibrationJobs
from unified_segmentation.services import ops
from unified_segmentation.services.facade import Services

SEG = "/api/v1/segmentation"
GAME = "test_game"


@pytest.fixture
def second_services(seeded) -> Iterator[Services]:
    """Another process's view of the seeded database: its own engine, caches and counters."""
    services = Services(seeded.url)
    yield services
    services.close()


def _two_clients(seeded, second_services, make_client, settings_for, **overrides):
    first = make_client(settings_for(seeded.url, **overrides), services=seeded.services)
    second = make_client(settings_for(seeded.url, **overrides), services=second_services)
    return first, second


def test_a_job_started_by_one_worker_is_visible_from_another(seeded, second_services, make_client, settings_for):
    first, second = _two_clients(seeded, second_services, make_client, settings_for)
    jobs: CalibrationJobs = first.app.state.jobs
    active = first.get(f"{SEG}/taxonomy/{GAME}").json()
    gate = threading.Event()
    job = jobs.submit(GAME, ("cross-worker", uuid.uuid4().hex),
                      lambda: gate.wait(30) and seeded.services.get_taxonomy(GAME))
    running = second.get(f"{SEG}/jobs/{job.job_id}")
    assert running.status_code == 200
    assert running.json()["status"] == "running" and running.json()["game_id"] == GAME
    gate.set()
    job.future.result(30)
    done = second.get(f"{SEG}/jobs/{job.job_id}").json()
    assert done["status"] == "succeeded" and done["taxonomy_version"] == active["taxonomy_version"]
    assert done["result"] == active
    assert done == first.get(f"{SEG}/jobs/{job.job_id}").json()


def test_a_failed_job_reports_its_error_everywhere(seeded, second_services, make_client, settings_for):
    from unified_segmentation.errors import NotEnoughData

    first, second = _two_clients(seeded, second_services, make_client, settings_for)

    def fail() -> dict:
        raise NotEnoughData("too few players")

    job = first.app.state.jobs.submit(GAME, ("failing", uuid.uuid4().hex), fail)
    with pytest.raises(NotEnoughData):
        job.future.result(30)
    body = second.get(f"{SEG}/jobs/{job.job_id}").json()
    assert body["status"] == "failed" and body["error"] == {"error": "not_enough_data", "detail": "too few players"}
    assert second.get(f"{SEG}/jobs/{uuid.uuid4().hex}").json()["error"] == "job_not_found"


def test_a_running_job_whose_worker_stopped_is_reported_failed(seeded, make_client, settings_for):
    client = make_client(settings_for(seeded.url, job_stale_s=60.0), services=seeded.services)
    job_id = uuid.uuid4().hex
    seeded.services.job_create(job_id, GAME, status="running", worker="gone-host:4242")
    assert client.get(f"{SEG}/jobs/{job_id}").json()["status"] == "running"  # its heartbeat is fresh
    with seeded.services.engine.begin() as conn:  # the worker died an hour ago: its last heartbeat is old
        conn.execute(text("UPDATE calibration_jobs SET heartbeat_at = :t WHERE job_id = :j"),
                     {"t": "2000-01-01 00:00:00.000000" if seeded.backend == "sqlite" else "2000-01-01T00:00:00Z",
                      "j": job_id})
    body = client.get(f"{SEG}/jobs/{job_id}").json()
    assert body["status"] == "failed" and body["finished_at"] is not None
    assert body["error"]["error"] == "job_lost" and "gone-host:4242" in body["error"]["detail"]
    assert client.get(f"{SEG}/jobs/{job_id}").json() == body  # stays failed


def test_heartbeats_keep_a_long_job_alive(seeded):
    jobs = CalibrationJobs(store=seeded.services, stale_after_s=0.4)  # beats every 0.1 s
    gate = threading.Event()
    job = jobs.submit(GAME, ("heartbeat", uuid.uuid4().hex), lambda: gate.wait(30) and {"taxonomy_version": 1})
    with seeded.services.engine.connect() as conn:
        def beat() -> object:
            return conn.execute(text("SELECT heartbeat_at FROM calibration_jobs WHERE job_id = :j"),
                                {"j": job.job_id}).scalar()

        first = beat()
        conn.rollback()
        changed = threading.Event()
        for _ in range(300):  # wait for a value, not for a time: the heartbeat moves
            if changed.wait(0.05) or beat() != first:
                break
            conn.rollback()
        assert beat() != first
    gate.set()
    job.future.result(30)
    jobs.shutdown()


def test_the_rate_limit_is_shared_by_two_workers(seeded, second_services, make_client, settings_for, monkeypatch):
    monkeypatch.setattr(ops, "current_window", lambda: 1_000_000_000 + hash(seeded.backend) % 1000)
    first, second = _two_clients(seeded, second_services, make_client, settings_for, auth="required",
                                 rate_limit_per_minute=4)
    key, _ = seeded.services.create_api_key("read")
    other, _ = seeded.services.create_api_key("read")
    url = f"/api/v1/games/{GAME}/settings"
    codes = [client.get(url, headers={"X-API-Key": key}).status_code
             for client in (first, second, first, second, first, second)]
    assert codes == [200, 200, 200, 200, 429, 429]  # 4 per minute in all, not 4 per process
    limited = second.get(url, headers={"X-API-Key": key})
    assert limited.json()["error"] == "rate_limited" and "retry-after" in limited.headers
    assert first.get(url, headers={"X-API-Key": other}).status_code == 200  # per key
    monkeypatch.setattr(ops, "current_window", lambda: 1_000_000_001 + hash(seeded.backend) % 1000)
    assert second.get(url, headers={"X-API-Key": key}).status_code == 200  # the next minute starts afresh


def _hits(services, key_id: int) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(hits), 0) FROM rate_limit_counters WHERE key_id = :k"),
                                {"k": key_id}).scalar())


def test_busy_keys_lease_their_limit_a_share_at_a_time(seeded, second_services, make_client, settings_for,
                                                         monkeypatch):
    """Limit 300: each worker reserves 3 calls at a time (one statement), counts them in memory, and
    once the counter is spent answers 429 without asking the database again this minute. The two
    workers serve exactly 300 calls between them."""
    monkeypatch.setattr(ops, "current_window", lambda: 1_100_000_000 + hash(seeded.backend) % 1000)
    first, second = _two_clients(seeded, second_services, make_client, settings_for, auth="required",
                                 rate_limit_per_minute=300)
    key, info = seeded.services.create_api_key("read")
    url = f"/api/v1/games/{GAME}/settings"
    for i in range(10):
        assert (first if i % 2 else second).get(url, headers={"X-API-Key": key}).status_code == 200
    assert _hits(seeded.services, info["id"]) == 12  # four leases of 3 (2 calls of the last two unused)
    codes = [(first if i % 2 else second).get(url, headers={"X-API-Key": key}).status_code for i in range(300)]
    assert codes.count(200) == 290 and codes[-10:] == [429] * 10  # 300 in all
    spent = _hits(seeded.services, info["id"])
    assert [c.get(url, headers={"X-API-Key": key}).status_code for c in (first, second) * 3] == [429] * 6
    assert _hits(seeded.services, info["id"]) == spent  # exhausted: no more statements this minute
    monkeypatch.setattr(ops, "current_window", lambda: 1_100_000_001 + hash(seeded.backend) % 1000)
    assert first.get(url, headers={"X-API-Key": key}).status_code == 200  # the next minute starts afresh


def test_a_reservation_is_granted_up_to_the_limit(seeded, second_services, monkeypatch):
    monkeypatch.setattr(ops, "current_window", lambda: 1_200_000_000 + hash(seeded.backend) % 1000)
    key_id = 10_000_000 + uuid.uuid4().int % 1_000_000
    takes = [svc.rate_limit_take(key_id, 10, 4)[1] for svc in (seeded.services, second_services) * 2]
    assert takes == [4, 4, 2, 0]
    assert seeded.services.rate_limit_hit(key_id, 10) is True  # a single call over the limit
    assert _hits(seeded.services, key_id) == 17  # reservations are counted whole, granted or not


def test_counters_are_one_row_per_key_and_minute(seeded, second_services):
    key_id = 10_000_000 + uuid.uuid4().int % 1_000_000
    window = 2_000_000_000
    counts = [svc.rate_limit_count(key_id, window) for svc in (seeded.services, second_services) * 3]
    assert counts == [1, 2, 3, 4, 5, 6]
    with seeded.services.engine.connect() as conn:
        rows = conn.execute(text("SELECT window_start, hits FROM rate_limit_counters WHERE key_id = :k"),
                            {"k": key_id}).all()
    assert [tuple(r) for r in rows] == [(window, 6)]
    # a later window purges the ones before the last two
    assert seeded.services.rate_limit_count(key_id, window + 5) == 1
    with seeded.services.engine.connect() as conn:
        rows = conn.execute(text("SELECT window_start FROM rate_limit_counters WHERE key_id = :k"),
                            {"k": key_id}).scalars().all()
    assert rows == [window + 5]


def test_an_unreachable_counter_database_is_a_database_error():
    """The counter's own connection hands out SQLAlchemy's errors, so the API answers 503, not 500."""
    from sqlalchemy.exc import DBAPIError

    services = Services("postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2")
    try:
        with pytest.raises(DBAPIError):
            services.rate_limit_hit(1, 10)
    finally:
        services.close()


def test_a_job_waiting_for_a_thread_is_queued_then_running(seeded):
    jobs = CalibrationJobs(max_workers=1, store=seeded.services, stale_after_s=3600)
    gates = [threading.Event(), threading.Event()]
    started = threading.Event()

    def second_job() -> dict:
        started.set()
        assert gates[1].wait(30)
        return {"taxonomy_version": 2}

    first = jobs.submit(GAME, ("queue", 1), lambda: gates[0].wait(30) and {"taxonomy_version": 1})
    second = jobs.submit(GAME, ("queue", 2), second_job)
    assert jobs.get(first.job_id).status == "running" and jobs.get(second.job_id).status == "queued"
    gates[0].set()
    assert started.wait(30)
    assert jobs.get(second.job_id).status == "running"
    gates[1].set()
    second.future.result(30)
    assert [jobs.get(j.job_id).status for j in (first, second)] == ["succeeded", "succeeded"]
    jobs.shutdown()
