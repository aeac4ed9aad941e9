"""Serving behaviour with real services: API keys beyond loopback, readiness failures, recalibration while
serving, and two uvicorn workers sharing metrics and rate limits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

GAME = "test_game"
PLAYER = "test_player"
SEG = "/api/v1/segmentation"


def test_keys_beyond_loopback_with_real_services(seeded, make_client, settings_for):
    services = seeded.services
    read, _ = services.create_api_key("read", name="reader")
    write, _ = services.create_api_key("write")
    admin, _ = services.create_api_key("admin")
    elsewhere, _ = services.create_api_key("admin", games=["another_game"])
    client = make_client(settings_for(seeded.url, host="0.0.0.0"), services=services)
    categorize = {"player_id": PLAYER, "game_id": GAME}
    events = {"game_id": GAME, "events": []}

    assert client.post(f"{SEG}/categorize", json=categorize).status_code == 401
    r = client.post(f"{SEG}/categorize", json=categorize, headers={"Authorization": "Bearer useg_bad_key"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert client.post(f"{SEG}/categorize", json=categorize, headers={"X-API-Key": read}).status_code == 200
    r = client.post("/api/v1/events", json=events, headers={"X-API-Key": read})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert client.post("/api/v1/events", json=events, headers={"X-API-Key": write}).status_code == 200
    r = client.post(f"{SEG}/taxonomy/calibrate", json={"game_id": GAME}, headers={"X-API-Key": write})
    assert r.status_code == 403
    r = client.post(f"{SEG}/categorize", json=categorize, headers={"Authorization": f"Bearer {elsewhere}"})
    assert r.status_code == 403 and "test_game" in r.json()["detail"]
    r = client.get(f"{SEG}/taxonomy/{GAME}", headers={"Authorization": f"Bearer {elsewhere}"})
    assert r.status_code == 403
    r = client.post(f"{SEG}/taxonomy/calibrate", json={"game_id": GAME}, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200
    assert client.get("/health/ready").status_code == 200  # health stays open


def test_readiness_fails_when_the_database_is_unreachable_or_behind(make_client, settings_for, tmp_path):
    from unified_segmentation.services.facade import Services

    unreachable = Services("postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2")
    behind = Services(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated
    try:
        r = make_client(settings_for("postgresql+psycopg://postgres@127.0.0.1:9/nowhere"),
                        services=unreachable).get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("unreachable")
        client = make_client(settings_for(f"sqlite:///{tmp_path / 'empty.db'}"), services=behind)
        r = client.get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"]["migrations"].startswith("not at head")
        assert make_client(services=unreachable).get("/health/live").status_code == 200
        r = make_client(services=unreachable).post(f"{SEG}/categorize", json={"player_id": "p", "game_id": "g"})
        assert r.status_code == 503 and r.json()["error"] == "database_unavailable"
    finally:
        unreachable.close()
        behind.close()


def test_recalibration_while_serving(seeded, make_client, settings_for):
    """Categorize calls interleaved with a forced calibration: no errors, each answer from one version."""
    client = make_client(settings_for(seeded.url), services=seeded.services)
    before = client.get(f"{SEG}/taxonomy/{GAME}").json()["taxonomy_version"]
    ids = seeded.game.truth["player_id"].head(40).to_list()
    done = threading.Event()
    result: dict = {}

    def recalibrate() -> None:
        try:
            result["response"] = client.post(f"{SEG}/taxonomy/calibrate",
                                             json={"game_id": GAME, "force_recalibration": True})
        finally:
            done.set()

    thread = threading.Thread(target=recalibrate)
    thread.start()
    answers = []
    deadline = time.monotonic() + 120
    while (not done.is_set() or len(answers) < 20) and time.monotonic() < deadline:
        pid = ids[len(answers) % len(ids)]
        answers.append(client.post(f"{SEG}/categorize", json={"player_id": pid, "game_id": GAME}))
        if len(answers) % 5 == 0:
            answers.append(client.post(f"{SEG}/categorize/batch", json={"game_id": GAME, "player_ids": ids[:10]}))
    thread.join(60)
    assert result["response"].status_code == 200
    after = result["response"].json()["taxonomy_version"]
    assert after > before  # a new version (numbers keep growing after rollbacks)
    seen = set()
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        versions = {body["taxonomy_version"]} | {p["taxonomy_version"] for p in body.get("profiles", [])}
        assert len(versions) == 1
        seen |= versions
    assert seen <= {before, after}
    final = client.post(f"{SEG}/categorize", json={"player_id": PLAYER, "game_id": GAME}).json()
    assert final["taxonomy_version"] == after


# ---------------------------------------------------------------------------------------------- two workers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_share_metrics_and_rate_limits(seeded_sqlite, tmp_path):
    services = seeded_sqlite.services
    key, _ = services.create_api_key("read", name="limited")
    port = _free_port()
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("USEG_")}
    env.update({"PROMETHEUS_MULTIPROC_DIR": str(prom_dir), "PYTHONUNBUFFERED": "1"})
    code = (
        "from unified_segmentation.api.server import run\n"
        "from unified_segmentation.config import Settings\n"
        f"run(Settings(database_url={seeded_sqlite.url!r}, port={port}, workers=2, auth='required',"
        " rate_limit_per_minute=5, log_level='WARNING'))\n"
    )
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    fresh = httpx.Client(base_url=base, limits=httpx.Limits(max_keepalive_connections=0), timeout=10)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, Path(tmp_path / "server.log").read_text()
            time.sleep(0.2)
        # concurrent requests on fresh connections until both workers have answered (the second may still be
        # starting when the first is ready), then the scrape - whichever worker answers it - must count them all
        n = 0
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(8) as pool:
            while True:
                codes = list(pool.map(lambda _: fresh.get("/health/live").status_code, range(16)))
                assert codes == [200] * 16
                n += 16
                pids = {p.name.rsplit("_", 1)[-1] for p in prom_dir.glob("*.db")}
                if len(pids) >= 2 or time.monotonic() > deadline:
                    break
        assert len(pids) >= 2, "both workers should have served requests"
        text = fresh.get("/metrics").text
        line = next(x for x in text.splitlines()
                    if x.startswith("useg_http_request_duration_seconds_count") and 'route="/health/live"' in x)
        assert float(line.rsplit(" ", 1)[1]) == n

        for _attempt in range(2):  # the limit is per minute: retry once if the window turned mid-test
            minute = int(time.time() // 60)
            codes = [fresh.get(f"{SEG}/taxonomy/{GAME}/history", headers={"X-API-Key": key}).status_code
                     for _ in range(12)]
            if int(time.time() // 60) == minute:
                break
            key, _ = services.create_api_key("read")
        assert codes.count(200) == 5 and codes.count(429) == 7, codes
    finally:
        fresh.close()
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: its master and workers
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
