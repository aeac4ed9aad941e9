"""``Idempotency-Key`` on write routes, on SQLite and PostgreSQL through the real migrations: the first
answer replayed byte for byte with nothing written twice, a reused key with another body refused, a
duplicate while the first runs refused, a failed (5xx) first attempt not remembered, records scoped
to the caller, and the claim itself safe under concurrent duplicates."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

SEG = "/api/v1/segmentation"
GAME = "test_game"


def _game(seeded, name: str) -> str:
    return f"idem_{name}_{seeded.backend}_{uuid.uuid4().hex[:6]}"


def _records(seeded) -> int:
    with seeded.services.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar())


def _events(n: int = 3) -> list[dict]:
    return [{"player_id": f"p{i}", "event_type": "session", "timestamp": f"2026-03-01T2{i}:00:00Z", "value": 60 + i}
            for i in range(n)]


def test_replay_is_byte_identical_and_writes_nothing_twice(api, seeded):
    game = _game(seeded, "replay")
    body = {"game_id": game, "events": _events()}
    first = api.post("/api/v1/events", json=body, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == 200 and first.json()["inserted"] == 3
    assert "idempotent-replayed" not in first.headers
    footprint, records = seeded.footprint(game), _records(seeded)
    for _ in range(2):
        again = api.post("/api/v1/events", json=body, headers={"Idempotency-Key": "batch-1"})
        assert again.status_code == first.status_code
        assert again.content == first.content  # byte-identical, not "0 inserted, 3 duplicates"
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["idempotency-key"] == "batch-1"
        assert again.headers["content-type"] == first.headers["content-type"]
    assert seeded.footprint(game) == footprint and _records(seeded) == records

    # an admin write: settings, then the same PUT replayed although the settings changed since
    put = api.put(f"/api/v1/games/{game}/settings", json={"timezone": "UTC", "current_days": 14},
                  headers={"Idempotency-Key": "settings-1"})
    assert put.status_code == 200, put.text
    assert api.put(f"/api/v1/games/{game}/settings", json={"current_days": 21}).status_code == 200
    replay = api.put(f"/api/v1/games/{game}/settings", json={"timezone": "UTC", "current_days": 14},
                     headers={"Idempotency-Key": "settings-1"})
    assert replay.status_code == 200 and replay.content == put.content
    assert api.get(f"/api/v1/games/{game}/settings").json()["settings"]["current_days"] == 21  # replay wrote nothing


def test_calibrate_with_a_key_is_replayed_without_a_second_version(api, seeded):
    versions = len(api.get(f"{SEG}/taxonomy/{GAME}/history").json()["versions"])
    body = {"game_id": GAME, "force_recalibration": True}
    key = {"Idempotency-Key": f"calibrate-{uuid.uuid4().hex}"}
    first = api.post(f"{SEG}/taxonomy/calibrate", json=body, headers=key)
    assert first.status_code == 200, first.text
    again = api.post(f"{SEG}/taxonomy/calibrate", json=body, headers=key)
    assert again.status_code == 200 and again.content == first.content
    assert len(api.get(f"{SEG}/taxonomy/{GAME}/history").json()["versions"]) == versions + 1


def test_same_key_with_another_body_is_refused_and_writes_nothing(api, seeded):
    game = _game(seeded, "mismatch")
    r = api.post("/api/v1/events", json={"game_id": game, "events": _events(2)}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 200
    footprint = seeded.footprint(game)
    other = api.post("/api/v1/events", json={"game_id": game, "events": _events(3)}, headers={"Idempotency-Key": "k"})
    assert other.status_code == 422
    body = other.json()
    assert body["error"] == "idempotency_key_reused"
    assert "'k'" in body["detail"] and "POST /api/v1/events" in body["detail"] and "new key" in body["detail"]
    assert seeded.footprint(game) == footprint
    # the same key on another route (or by another caller) is another record: it runs
    daily = [{"player_id": "p9", "date": "2026-03-01", "sessions": 1, "playtime_minutes": 5, "purchases": 0,
              "spend": 0, "social_events": 0}]
    assert api.post("/api/v1/daily", json={"game_id": game, "rows": daily},
                    headers={"Idempotency-Key": "k"}).status_code == 200
    # and the original request still replays
    assert api.post("/api/v1/events", json={"game_id": game, "events": _events(2)},
                    headers={"Idempotency-Key": "k"}).content == r.content


def test_bad_keys_and_read_routes(api, seeded):
    r = api.post("/api/v1/events", json={"game_id": "g", "events": []}, headers={"Idempotency-Key": "has space"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_input" and "Idempotency-Key" in r.json()["detail"]
    records = _records(seeded)
    # scoring POSTs are reads: the header is ignored, nothing is stored
    for _ in range(2):
        r = api.post(f"{SEG}/categorize", json={"player_id": "test_player", "game_id": GAME},
                     headers={"Idempotency-Key": "read-1"})
        assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert _records(seeded) == records


def test_duplicate_while_the_first_runs_is_409_then_replays(api, seeded, monkeypatch):
    game = _game(seeded, "inflight")
    services = seeded.services
    entered, release = threading.Event(), threading.Event()
    real = services.ingest_outcomes

    def gated(game_id, frame):
        entered.set()
        assert release.wait(30)
        return real(game_id, frame)

    monkeypatch.setattr(services, "ingest_outcomes", gated)
    body = {"game_id": game, "rows": [{"player_id": "p1", "ltv": 3.5}]}
    headers = {"Idempotency-Key": "slow-1"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(api.post, "/api/v1/outcomes", json=body, headers=headers)
        assert entered.wait(30)
        dup = api.post("/api/v1/outcomes", json=body, headers=headers)
        assert dup.status_code == 409 and dup.json()["error"] == "idempotency_in_progress"
        clash = api.post("/api/v1/outcomes", json={**body, "rows": [{"player_id": "p2", "ltv": 1}]}, headers=headers)
        assert clash.status_code == 422 and clash.json()["error"] == "idempotency_key_reused"
        release.set()
        answer = first.result(30)
    monkeypatch.setattr(services, "ingest_outcomes", real)
    assert answer.status_code == 200
    assert seeded.count("outcomes", game) == 1
    again = api.post("/api/v1/outcomes", json=body, headers=headers)
    assert again.status_code == 200 and again.content == answer.content


def test_a_failed_first_attempt_is_not_remembered(api, seeded, monkeypatch):
    game = _game(seeded, "fail")
    services = seeded.services
    real = services.ingest_outcomes

    def broken(game_id, frame):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "ingest_outcomes", broken)
    body = {"game_id": game, "rows": [{"player_id": "p1", "ltv": 3.5}]}
    r = api.post("/api/v1/outcomes", json=body, headers={"Idempotency-Key": "retry-me"})
    assert r.status_code == 500
    monkeypatch.setattr(services, "ingest_outcomes", real)
    retry = api.post("/api/v1/outcomes", json=body, headers={"Idempotency-Key": "retry-me"})
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert seeded.count("outcomes", game) == 1


def test_records_are_scoped_to_the_api_key(seeded, make_client, settings_for):
    client = make_client(settings_for(seeded.url, auth="required", rate_limit_per_minute=0), services=seeded.services)
    first_key, _ = seeded.services.create_api_key("write")
    second_key, _ = seeded.services.create_api_key("write")
    game = _game(seeded, "scoped")
    body = {"game_id": game, "events": _events(2)}
    a = client.post("/api/v1/events", json=body, headers={"X-API-Key": first_key, "Idempotency-Key": "same"})
    b = client.post("/api/v1/events", json=body, headers={"X-API-Key": second_key, "Idempotency-Key": "same"})
    assert a.json()["inserted"] == 2 and b.json()["inserted"] == 0 and b.json()["duplicates"] == 2
    assert "idempotent-replayed" not in b.headers
    # no key, no replay: authentication comes first
    r = client.post("/api/v1/events", json=body, headers={"Idempotency-Key": "same"})
    assert r.status_code == 401


# ---------------------------------------------------------------------------------------------- the claim itself
def _record(request_hash: str = "h1") -> dict:
    return {"v": 1, "state": "in_progress", "claim": uuid.uuid4().hex, "request_hash": request_hash,
            "method": "POST", "path": "/x"}


def test_concurrent_claims_have_exactly_one_winner(seeded):
    key = uuid.uuid4().hex
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(
            lambda _: seeded.services.idempotency_claim(key, "", _record(), ttl_s=3600, stale_s=3600)[0], range(16)))
    assert outcomes.count("new") == 1 and outcomes.count("in_progress") == 15


def test_claim_lifecycle_expiry_and_takeover(seeded):
    svc = seeded.services
    key = uuid.uuid4().hex
    mine = _record()
    assert svc.idempotency_claim(key, "g", mine, ttl_s=3600, stale_s=3600) == ("new", None)
    assert svc.idempotency_claim(key, "g", _record(), ttl_s=3600, stale_s=3600)[0] == "in_progress"
    assert svc.idempotency_claim(key, "g", _record("other"), ttl_s=3600, stale_s=3600)[0] == "mismatch"
    # only the claim's holder settles it
    assert not svc.idempotency_settle(key, "g", "not-mine", {**mine, "state": "done"})
    done = {**mine, "state": "done", "status": 201, "headers": [], "body": "{}", "body_encoding": "utf-8"}
    assert svc.idempotency_settle(key, "g", mine["claim"], done)
    outcome, stored = svc.idempotency_claim(key, "g", _record(), ttl_s=3600, stale_s=3600)
    assert outcome == "replay" and stored["status"] == 201
    # past its TTL (a negative TTL puts the cut-off in the future) the record is claimed afresh
    assert svc.idempotency_claim(key, "g", _record("new-body"), ttl_s=-60, stale_s=3600) == ("new", None)
    # an unfinished claim whose holder went silent (stale) is taken over; the old holder cannot settle it
    stale_holder = _record("new-body")
    key2 = uuid.uuid4().hex
    assert svc.idempotency_claim(key2, "g", stale_holder, ttl_s=3600, stale_s=3600)[0] == "new"
    assert svc.idempotency_claim(key2, "g", _record("new-body"), ttl_s=3600, stale_s=-60)[0] == "new"
    assert not svc.idempotency_settle(key2, "g", stale_holder["claim"], None)
    # purging drops expired records
    assert svc.idempotency_purge(-60) >= 2
    assert svc.idempotency_claim(key2, "g", _record("new-body"), ttl_s=3600, stale_s=3600)[0] == "new"


def test_released_claim_can_be_claimed_again(seeded):
    svc = seeded.services
    key = uuid.uuid4().hex
    mine = _record()
    svc.idempotency_claim(key, "", mine, ttl_s=3600, stale_s=3600)
    assert svc.idempotency_settle(key, "", mine["claim"], None)  # what the middleware does on a 5xx
    assert svc.idempotency_claim(key, "", _record(), ttl_s=3600, stale_s=3600)[0] == "new"
