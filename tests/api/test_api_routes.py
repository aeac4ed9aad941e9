"""Every endpoint's happy path on the planted ``test_game`` (SQLite and PostgreSQL), through the real
services: answers carry the taxonomy version and the fields the seed and DESIGN §4.3–4.5 promise."""

from __future__ import annotations

import time

import pytest

GAME = "test_game"
PLAYER = "test_player"

SEG = "/api/v1/segmentation"

TAXONOMY_FIELDS = {"game_id", "taxonomy_version", "as_of", "last_calibrated", "total_axes_count",
                   "total_segments_count", "variance_explained", "quality", "universal_axes", "game_specific_axes",
                   "model"}
SEGMENT_FIELDS = {"segment_id", "segment_name", "center_position", "standard_deviations", "covariance_matrix",
                  "contextual_centers", "population_percentage", "ltv_correlation", "churn_correlation",
                  "support_risk_correlation"}


def _players(seeded, n: int) -> list[str]:
    return seeded.game.truth["player_id"].head(n).to_list()


def test_seed_curl_examples_work_as_written(api):
    """The seed's "Run Initial Tests": health, calibrate with force_recalibration, categorize test_player."""
    assert api.get("/health").json()["status"] == "ok"
    r = api.post(f"{SEG}/taxonomy/calibrate", content=b'{"game_id":"test_game","force_recalibration":true}',
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    taxonomy = r.json()
    assert set(taxonomy) >= TAXONOMY_FIELDS and taxonomy["game_id"] == GAME
    assert {a["axis_id"] for a in taxonomy["universal_axes"]} >= {"monetization", "engagement", "temporal", "social"}
    segment = taxonomy["universal_axes"][0]["segments"][0]
    assert set(segment) >= SEGMENT_FIELDS
    r = api.post(f"{SEG}/categorize", content=b'{"player_id":"test_player","game_id":"test_game"}',
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    profile = r.json()
    assert profile["player_id"] == PLAYER and profile["game_id"] == GAME
    assert profile["taxonomy_version"] == taxonomy["taxonomy_version"]
    assert 0 <= profile["confidence"] <= 1 and 0 <= len(profile["top_segments"]) <= 7
    assert "variance_coverage" in profile
    mono = profile["axes"]["monetization"]
    assert mono["primary_segment"] in {m["segment_name"] for m in mono["memberships"]}
    m = mono["memberships"][0]
    assert {"segment_id", "segment_name", "membership_strength", "distance_from_center", "position_offset"} <= set(m)


def test_taxonomy_versions_history_and_rollback(api):
    active = api.get(f"{SEG}/taxonomy/{GAME}").json()
    newer = api.post(f"{SEG}/taxonomy/calibrate", json={"game_id": GAME, "force_recalibration": True}).json()
    assert newer["taxonomy_version"] == active["taxonomy_version"] + 1
    unchanged = api.post(f"{SEG}/taxonomy/calibrate", json={"game_id": GAME}).json()
    assert unchanged["taxonomy_version"] == newer["taxonomy_version"]  # data unchanged: no new version
    history = api.get(f"{SEG}/taxonomy/{GAME}/history").json()
    versions = [v["version"] for v in history["versions"]]
    assert active["taxonomy_version"] in versions and newer["taxonomy_version"] in versions

    r = api.post(f"{SEG}/taxonomy/{GAME}/rollback", json={"version": active["taxonomy_version"]})
    assert r.status_code == 200 and r.json()["taxonomy_version"] == active["taxonomy_version"]
    assert api.get(f"{SEG}/taxonomy/{GAME}").json()["taxonomy_version"] == active["taxonomy_version"]
    old = api.get(f"{SEG}/taxonomy/{GAME}", params={"version": active["taxonomy_version"]}).json()
    assert old == api.get(f"{SEG}/taxonomy/{GAME}").json()
    profile = api.post(f"{SEG}/categorize", json={"player_id": PLAYER, "game_id": GAME}).json()
    assert profile["taxonomy_version"] == active["taxonomy_version"]
    pinned = api.post(f"{SEG}/categorize", json={"player_id": PLAYER, "game_id": GAME,
                                                 "taxonomy_version": newer["taxonomy_version"]}).json()
    assert pinned["taxonomy_version"] == newer["taxonomy_version"]
    r = api.post(f"{SEG}/taxonomy/{GAME}/rollback")  # no body: the version before the active one
    assert r.status_code in (200, 404)
    assert api.get(f"{SEG}/taxonomy/{GAME}", params={"version": 999}).json()["error"] == "taxonomy_not_found"


def test_calibration_answers_202_with_a_job_when_it_takes_longer(seeded_sqlite, make_client, settings_for):
    seeded = seeded_sqlite
    client = make_client(settings_for(seeded.url, calibrate_wait_s=0.0), services=seeded.services)
    r = client.post(f"{SEG}/taxonomy/calibrate", json={"game_id": GAME, "force_recalibration": True})
    assert r.status_code == 202
    job = r.json()
    assert job["status"] == "running" and job["status_url"] == f"{SEG}/jobs/{job['job_id']}"
    assert r.headers["location"] == job["status_url"]
    deadline = time.monotonic() + 60
    status = client.get(job["status_url"]).json()
    while status["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.get(job["status_url"]).json()
    assert status["status"] == "succeeded", status
    assert status["result"]["taxonomy_version"] == status["taxonomy_version"]
    assert client.get(f"{SEG}/jobs/nope").json()["error"] == "job_not_found"


def test_categorize_batch_full_and_compact(api, seeded):
    ids = _players(seeded, 50)
    r = api.post(f"{SEG}/categorize/batch", json={"game_id": GAME, "player_ids": [*ids, "ghost"]})
    assert r.status_code == 200
    body = r.json()
    assert len(body["profiles"]) == 50 and body["errors"] == [{"player_id": "ghost", "error": "player_not_found"}]
    assert {p["taxonomy_version"] for p in body["profiles"]} == {body["taxonomy_version"]}
    compact = api.post(f"{SEG}/categorize/batch", json={"game_id": GAME, "player_ids": ids, "compact": True}).json()
    assert sorted(p["player_id"] for p in compact["profiles"]) == sorted(ids)
    full = {p["player_id"]: p for p in body["profiles"]}
    for p in compact["profiles"]:
        assert {"primary_segments", "top_segments", "confidence", "taxonomy_version"} <= set(p)
        assert p["primary_segments"]["monetization"] == full[p["player_id"]]["axes"]["monetization"]["primary_segment"]
    columnar = api.post(f"{SEG}/categorize/batch",
                        json={"game_id": GAME, "player_ids": [*ids, "ghost"], "columnar": True}).json()
    cols = columnar["columns"]
    assert "profiles" not in columnar and columnar["errors"] == [{"player_id": "ghost", "error": "player_not_found"}]
    by_id = {p["player_id"]: p for p in compact["profiles"]}
    assert sorted(cols["player_id"]) == sorted(ids) and len(cols["confidence"]) == len(ids)
    for i, pid in enumerate(cols["player_id"]):
        assert cols["confidence"][i] == pytest.approx(by_id[pid]["confidence"], rel=1e-12)
        assert {axis: names[i] for axis, names in cols["primary_segments"].items()} == by_id[pid]["primary_segments"]
        top = [[a, s] for a, s in zip(cols["top_segments"]["axis"][i], cols["top_segments"]["segment"][i],
                                      strict=True) if a is not None]
        assert top == by_id[pid]["top_segments"]


def test_detect_single_batch_listing_and_shifts(api, seeded):
    r = api.post(f"{SEG}/anomalies/detect", json={"player_id": PLAYER, "game_id": GAME})
    assert r.status_code == 200, r.text
    det = r.json()
    assert det["player_id"] == PLAYER and isinstance(det["taxonomy_version"], int)
    assert {"is_anomalous", "overall_score", "confidence", "axes"} <= set(det)
    axis = next(iter(det["axes"].values()))
    assert {"current_distance", "typical_distance", "distance_delta", "deviation", "anomaly_score",
            "is_anomalous"} <= set(axis)
    planted = seeded.game.truth.filter(seeded.game.truth["anomaly"].is_not_null())["player_id"].to_list()
    ids = list(dict.fromkeys([*planted[:20], *_players(seeded, 30)]))
    batch = api.post(f"{SEG}/anomalies/detect/batch", json={"game_id": GAME, "player_ids": ids, "persist": True})
    assert batch.status_code == 200
    detections = batch.json()["detections"]
    assert len(detections) == len(ids) and any(d["is_anomalous"] for d in detections)
    listing = api.get(f"{SEG}/anomalies", params={"game_id": GAME, "limit": 5})
    assert listing.status_code == 200
    page = listing.json()
    assert 1 <= len(page["items"]) <= 5 and "next_cursor" in page
    if page["next_cursor"]:
        nxt = api.get(f"{SEG}/anomalies", params={"game_id": GAME, "limit": 5, "cursor": page["next_cursor"]})
        assert nxt.status_code == 200
    filtered = api.get(f"{SEG}/anomalies", params={"game_id": GAME, "min_score": 0.99,
                                                   "since": "2020-01-01T00:00:00Z"})
    assert filtered.status_code == 200
    shifts = api.get(f"{SEG}/anomalies/shifts", params={"game_id": GAME})
    assert shifts.status_code == 200 and shifts.json()["game_id"] == GAME


def test_game_settings_read_and_write(api, seeded):
    game = f"settings_game_{seeded.backend}"
    assert api.get(f"/api/v1/games/{game}/settings").json()["error"] == "game_not_found"
    r = api.put(f"/api/v1/games/{game}/settings", json={"timezone": "Europe/London", "holiday_country": "gb"})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["timezone"] == "Europe/London" and r.json()["settings"]["holiday_country"] == "GB"
    got = api.get(f"/api/v1/games/{game}/settings").json()
    assert got["settings"]["timezone"] == "Europe/London" and got["settings"]["profile_days"] == 28
    assert api.put(f"/api/v1/games/{game}/settings", json={"timezone": "Mars/Olympus"}).status_code == 422
    assert api.put(f"/api/v1/games/{game}/settings", json={"profile_days": "many"}).status_code == 422
    assert api.put(f"/api/v1/games/{game}/settings", json={"colour": "red"}).status_code == 422


def test_ingestion_events_daily_outcomes_and_idempotent_repeat(api, seeded):
    game = f"ingest_game_{seeded.backend}"
    events = [
        {"player_id": "p1", "event_type": "session", "timestamp": "2026-03-01T20:00:00Z", "value": 1800},
        {"player_id": "p1", "event_type": "purchase", "timestamp": 1772395200, "value": 4.99},
        {"event_id": "e-3", "player_id": "p2", "event_type": "social", "timestamp": "2026-03-01T21:00:00",
         "properties": {"kind": "guild"}},
    ]
    r = api.post("/api/v1/events", json={"game_id": game, "events": events}, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3 and r.json()["inserted"] == 3 and r.headers["idempotency-key"] == "k1"
    before = seeded.footprint(game)
    again = api.post("/api/v1/events", json={"game_id": game, "events": events}, headers={"Idempotency-Key": "k1"})
    # the first answer replayed (tests/api/test_api_idempotency.py covers the details)
    assert again.status_code == 200 and again.content == r.content and again.headers["idempotent-replayed"] == "true"
    assert seeded.footprint(game) == before
    keyless = api.post("/api/v1/events", json={"game_id": game, "events": events})
    assert keyless.json()["inserted"] == 0 and keyless.json()["duplicates"] == 3  # event ids dedup without a key
    assert seeded.footprint(game) == before
    daily = [{"player_id": "p3", "date": "2026-03-01", "sessions": 2, "playtime_minutes": 45, "purchases": 0,
              "spend": 0, "social_events": 1}]
    r = api.post("/api/v1/daily", json={"game_id": game, "rows": daily})
    assert r.status_code == 200, r.text
    outcomes = [{"player_id": "p1", "ltv": 12.5, "churned": 0, "support_tickets": 1}]
    r = api.post("/api/v1/outcomes", json={"game_id": game, "rows": outcomes})
    assert r.status_code == 200, r.text
    assert seeded.footprint(game) == (3, before[1] + 1, 1)
    assert api.post("/api/v1/events", json={"game_id": game, "events": []}).json()["accepted"] == 0


def test_erase_player(api, seeded):
    game = f"erase_game_{seeded.backend}"
    api.post("/api/v1/events", json={"game_id": game, "events": [
        {"player_id": "gone", "event_type": "session", "timestamp": "2026-03-01T20:00:00Z", "value": 60}]})
    r = api.delete(f"/api/v1/games/{game}/players/gone")
    assert r.status_code == 200 and r.json()["erased"] is True
    assert seeded.count("raw_events", game) == 0
    assert api.delete(f"/api/v1/games/{game}/players/gone").json()["error"] == "player_not_found"


def test_metrics_count_the_traffic(api):
    api.post(f"{SEG}/categorize", json={"player_id": PLAYER, "game_id": GAME})
    api.post(f"{SEG}/anomalies/detect", json={"player_id": PLAYER, "game_id": GAME})
    text = api.get("/metrics").text
    assert 'useg_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/api/v1/segmentation/categorize"' \
        in text
    assert 'useg_categorizations_total{game_id="test_game"}' in text
    assert 'useg_anomaly_detections_total{game_id="test_game"}' in text
    assert 'useg_profile_confidence_sum_total{game_id="test_game"}' in text
    assert 'useg_variance_explained{game_id="test_game"}' in text


def test_readiness_on_a_real_database(api):
    r = api.get("/health/ready")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_openapi_lists_every_endpoint(api):
    paths = api.get("/openapi.json").json()["paths"]
    expected = {
        f"{SEG}/taxonomy/calibrate": {"post"}, f"{SEG}/taxonomy/{{game_id}}": {"get"},
        f"{SEG}/taxonomy/{{game_id}}/history": {"get"}, f"{SEG}/taxonomy/{{game_id}}/rollback": {"post"},
        f"{SEG}/jobs/{{job_id}}": {"get"},
        f"{SEG}/categorize": {"post"}, f"{SEG}/categorize/batch": {"post"},
        f"{SEG}/anomalies/detect": {"post"}, f"{SEG}/anomalies/detect/batch": {"post"},
        f"{SEG}/anomalies": {"get"}, f"{SEG}/anomalies/shifts": {"get"},
        "/api/v1/events": {"post"}, "/api/v1/daily": {"post"}, "/api/v1/outcomes": {"post"},
        "/api/v1/games/{game_id}/settings": {"get", "put"}, "/api/v1/games/{game_id}/players/{player_id}": {"delete"},
        f"{SEG}/profile": {"post"}, f"{SEG}/rollout/{{game_id}}": {"get", "put"},
        f"{SEG}/rollout/{{game_id}}/rollback": {"post"}, f"{SEG}/rollout/{{game_id}}/report": {"get"},
        f"{SEG}/rollout/{{game_id}}/validate": {"post"}, f"{SEG}/rollout/{{game_id}}/validation": {"get"},
        f"{SEG}/rollout/{{game_id}}/validation/{{report_id}}": {"get"},
        "/health": {"get"}, "/health/live": {"get"}, "/health/ready": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert set(paths[path]) == methods, path
    assert api.get("/docs").status_code == 200


def test_adapter_profile_rollout_and_validation(api, seeded):
    game = GAME
    r = api.post(f"{SEG}/profile", json={"player_id": PLAYER, "game_id": game})
    assert r.status_code == 200, r.text
    prof = r.json()
    assert prof["player_id"] == PLAYER and prof["served_by"] in ("legacy", "unified")
    assert {"primary_segments", "segment_scores", "behavioral_baseline", "confidence", "timestamp", "fallback"} <= \
        set(prof)
    forced = api.post(f"{SEG}/profile", json={"player_id": PLAYER, "game_id": game, "force_unified": True}).json()
    assert forced["served_by"] == "unified" and forced["fallback"] is False
    both = api.post(f"{SEG}/profile", json={"player_id": PLAYER, "game_id": game, "force_unified": True,
                                            "force_legacy": True})
    assert both.status_code == 422

    assert "strategy" in api.get(f"{SEG}/rollout/{game}").json()
    r = api.put(f"{SEG}/rollout/{game}", json={"strategy": "gradual_rollout", "percentage": 25})
    assert r.status_code == 200 and r.json()["percentage"] == 25
    r = api.put(f"{SEG}/rollout/{game}", json={"strategy": "full_rollout"})
    assert r.status_code == 200, r.text
    assert r.json()["strategy"] == "full_rollout"
    assert api.post(f"{SEG}/profile", json={"player_id": PLAYER, "game_id": game}).json()["served_by"] == "unified"
    assert api.put(f"{SEG}/rollout/{game}", json={"strategy": "everything"}).status_code == 422
    assert api.put(f"{SEG}/rollout/{game}", json={"percentage": 150}).status_code == 422
    r = api.post(f"{SEG}/rollout/{game}/rollback")
    assert r.status_code == 200 and r.json()["strategy"] == "gradual_rollout" and r.json()["percentage"] == 25
    assert api.get(f"{SEG}/rollout/{game}/report").status_code == 200

    r = api.post(f"{SEG}/rollout/{game}/validate", json={"sample": 60})
    assert r.status_code == 200, r.text
    report = r.json()
    assert isinstance(report["id"], int)
    listed = api.get(f"{SEG}/rollout/{game}/validation").json()["reports"]
    assert report["id"] in [x["id"] for x in listed]
    got = api.get(f"{SEG}/rollout/{game}/validation/{report['id']}")
    assert got.status_code == 200 and got.json()["id"] == report["id"]
    missing = api.get(f"{SEG}/rollout/{game}/validation/987654")
    assert 400 <= missing.status_code < 500 and missing.json()["error"]
    assert api.post(f"{SEG}/rollout/{game}/validate", json={"sample": 0}).status_code == 422
    assert api.get(f"{SEG}/rollout/no_such_game").json()["error"] == "game_not_found"
