"""Bad inputs: every one a 4xx JSON error naming the problem, never a 500, and nothing written."""

from __future__ import annotations

import json

import pytest

GAME = "test_game"
PLAYER = "test_player"
SEG = "/api/v1/segmentation"
JSON = {"Content-Type": "application/json"}

GOOD = {"player_id": "p1", "event_type": "session", "timestamp": "2026-03-01T20:00:00Z", "value": 60}

BAD_EVENT_BODIES = {
    "malformed_json": (b'{"game_id": "G", "events": [', 400, "malformed_json", None),
    "nan_value": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "purchase", '
                  b'"timestamp": "2026-03-01T20:00:00Z", "value": NaN}]}', 422, "invalid_input", "value"),
    "infinity_value": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "purchase", '
                       b'"timestamp": "2026-03-01T20:00:00Z", "value": Infinity}]}', 422, "invalid_input", "value"),
    "overflow_value": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "purchase", '
                       b'"timestamp": "2026-03-01T20:00:00Z", "value": 1e999}]}', 422, "invalid_input", "value"),
    "negative_value": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "purchase", '
                       b'"timestamp": "2026-03-01T20:00:00Z", "value": -3}]}', 422, "invalid_input", "value"),
    "millisecond_timestamp": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "session", '
                              b'"timestamp": 1772395200000}]}', 422, "invalid_input", "timestamp"),
    "garbage_timestamp": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "session", '
                          b'"timestamp": "last tuesday"}]}', 422, "invalid_input", "timestamp"),
    "value_is_text": (b'{"game_id": "G", "events": [{"player_id": "p1", "event_type": "purchase", '
                      b'"timestamp": "2026-03-01T20:00:00Z", "value": "lots"}]}', 422, "invalid_input", "value"),
    "events_not_a_list": (b'{"game_id": "G", "events": {"player_id": "p1"}}', 422, "invalid_input", "events"),
    "row_not_an_object": (b'{"game_id": "G", "events": [5]}', 422, "invalid_input", "events"),
    "missing_player": (b'{"game_id": "G", "events": [{"event_type": "session", "timestamp": 1772395200}]}',
                       422, "invalid_input", "player_id"),
    "empty_player": (b'{"game_id": "G", "events": [{"player_id": "", "event_type": "session", '
                     b'"timestamp": 1772395200}]}', 422, "invalid_input", "player_id"),
    "game_id_number": (b'{"game_id": 7, "events": []}', 422, "invalid_input", "game_id"),
    "unknown_field": (b'{"game_id": "G", "events": [], "extra": 1}', 422, "invalid_input", "extra"),
}


@pytest.mark.parametrize("case", sorted(BAD_EVENT_BODIES))
def test_bad_event_payloads_are_rejected_whole_and_write_nothing(api, seeded, case):
    game = f"bad_{case}_{seeded.backend}"
    raw, status, code, field = BAD_EVENT_BODIES[case]
    # a good row first: the bad one must reject the whole request
    raw = raw.replace(b'"G"', f'"{game}"'.encode()).replace(b'"events": [{', b'"events": [' + (
        b'{"player_id": "ok", "event_type": "session", "timestamp": "2026-03-01T19:00:00Z", "value": 5}, {'))
    r = api.post("/api/v1/events", content=raw, headers=JSON)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["detail"]
    if field is not None:
        assert field in body["detail"], body
    assert seeded.footprint(game) == (0, 0, 0)
    assert api.get(f"/api/v1/games/{game}/settings").status_code == 404  # the game was not created either


def test_bad_daily_and_outcome_rows_write_nothing(api, seeded):
    game = f"bad_rows_{seeded.backend}"
    good = {"player_id": "p", "date": "2026-03-01", "sessions": 1, "playtime_minutes": 5, "purchases": 0,
            "spend": 0, "social_events": 0}
    for bad in ({"spend": -1}, {"date": "01/03/2026"}, {"sessions": "two"}, {"playtime_minutes": 1e999}):
        body = {"game_id": game, "rows": [good, {**good, "player_id": "q", **bad}]}
        r = api.post("/api/v1/daily", content=json.dumps(body), headers=JSON)  # Python writes inf as Infinity
        assert r.status_code == 422, (bad, r.text)
        assert "row 2" in r.json()["detail"]
    for bad in ({"ltv": -5}, {"churned": 3}, {"support_tickets": "many"}):
        r = api.post("/api/v1/outcomes", json={"game_id": game, "rows": [{"player_id": "p", **bad}]})
        assert r.status_code == 422, (bad, r.text)
    assert seeded.footprint(game) == (0, 0, 0)


def test_oversized_requests_answer_413(seeded, make_client, settings_for):
    client = make_client(settings_for(seeded.url, max_body_bytes=20_000, max_batch_events=5), services=seeded.services)
    game = f"big_{seeded.backend}"
    r = client.post("/api/v1/events", json={"game_id": game, "events": [GOOD] * 6})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large" and "limit is 5" in r.json()["detail"]
    r = client.post("/api/v1/events", json={"game_id": game, "events": [GOOD] * 500})  # > 20 kB
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert seeded.footprint(game) == (0, 0, 0)


def test_more_than_10000_players_answer_413(api):
    ids = [f"p{i}" for i in range(10_001)]
    for path in ("/categorize/batch", "/anomalies/detect/batch"):
        r = api.post(f"{SEG}{path}", json={"game_id": GAME, "player_ids": ids})
        assert r.status_code == 413 and r.json() == {
            "error": "payload_too_large", "detail": "10001 players in one request; the limit is 10000"}


@pytest.mark.parametrize("method,path,body", [
    ("post", f"{SEG}/categorize", {"player_id": PLAYER, "game_id": "no_such_game"}),
    ("post", f"{SEG}/categorize/batch", {"player_ids": [PLAYER], "game_id": "no_such_game"}),
    ("post", f"{SEG}/anomalies/detect", {"player_id": PLAYER, "game_id": "no_such_game"}),
    ("post", f"{SEG}/anomalies/detect/batch", {"player_ids": [PLAYER], "game_id": "no_such_game"}),
    ("post", f"{SEG}/taxonomy/calibrate", {"game_id": "no_such_game"}),
    ("get", f"{SEG}/taxonomy/no_such_game", None),
    ("get", f"{SEG}/taxonomy/no_such_game/history", None),
    ("post", f"{SEG}/taxonomy/no_such_game/rollback", None),
    ("get", f"{SEG}/anomalies?game_id=no_such_game", None),
    ("get", f"{SEG}/anomalies/shifts?game_id=no_such_game", None),
    ("get", "/api/v1/games/no_such_game/settings", None),
    ("delete", "/api/v1/games/no_such_game/players/p", None),
])
def test_unknown_game_is_404_game_not_found(api, method, path, body):
    r = api.request(method.upper(), path, json=body)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "game_not_found"


def test_unknown_player_is_404_player_not_found(api):
    for path in ("/categorize", "/anomalies/detect"):
        r = api.post(f"{SEG}{path}", json={"player_id": "nobody", "game_id": GAME})
        assert r.status_code == 404 and r.json()["error"] == "player_not_found"


def test_no_taxonomy_yet_is_409(api, seeded):
    game = f"uncalibrated_{seeded.backend}"
    assert api.post("/api/v1/events", json={"game_id": game, "events": [GOOD]}).status_code == 200
    for method, path, body in (("POST", f"{SEG}/categorize", {"player_id": "p1", "game_id": game}),
                               ("POST", f"{SEG}/anomalies/detect", {"player_id": "p1", "game_id": game}),
                               ("GET", f"{SEG}/taxonomy/{game}", None)):
        r = api.request(method, path, json=body)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "no_taxonomy"


SQLISH = ["x'); DROP TABLE raw_events; --", "1 OR 1=1", "\" OR \"\"=\"", "%' --", "p;DELETE FROM games"]


def test_sql_looking_ids_are_stored_safely(api, seeded):
    game = f"g'; DROP TABLE games; --{seeded.backend}"
    events = [{**GOOD, "player_id": pid} for pid in SQLISH]
    r = api.post("/api/v1/events", json={"game_id": game, "events": events})
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == len(SQLISH)
    assert seeded.count("raw_events", game) == len(SQLISH)
    from urllib.parse import quote

    assert api.get(f"/api/v1/games/{quote(game, safe='')}/settings").status_code == 200
    r = api.post(f"{SEG}/categorize", json={"player_id": SQLISH[0], "game_id": GAME})
    assert r.status_code == 404 and r.json()["error"] == "player_not_found"
    r = api.get(f"{SEG}/anomalies", params={"game_id": GAME, "axis": "x' OR '1'='1", "direction": "a;--"})
    assert r.status_code == 200
    assert api.get(f"{SEG}/taxonomy/{GAME}").status_code == 200  # tables still there


@pytest.mark.parametrize("player_id", ["", "a\x00b", "tab\there", "x" * 256])
def test_invalid_identifiers_are_422(api, player_id):
    r = api.post(f"{SEG}/categorize", json={"player_id": player_id, "game_id": GAME})
    assert r.status_code == 422 and r.json()["detail"].startswith("player_id:")


def test_nul_bytes_inside_event_rows_never_reach_the_database(api, seeded):
    game = f"nul_{seeded.backend}"
    r = api.post("/api/v1/events", json={"game_id": game, "events": [GOOD, {**GOOD, "player_id": "a\x00b"}]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("events[1].player_id: NUL")
    r = api.post("/api/v1/events", json={"game_id": game, "events": [{**GOOD, "properties": {"k": "\x00"}}]})
    assert r.status_code == 422 and "events[0].properties.k" in r.json()["detail"]
    assert seeded.footprint(game) == (0, 0, 0)
    r = api.post("/api/v1/events", json={"game_id": game, "events": [{**GOOD, "event_type": "a\\u0000"}]})
    assert r.status_code == 200  # a literal backslash-u text is fine


@pytest.mark.parametrize("body", [
    {"player_id": PLAYER, "game_id": GAME, "as_of": 1772395200000},
    {"player_id": PLAYER, "game_id": GAME, "as_of": "not a time"},
    {"player_id": PLAYER, "game_id": GAME, "taxonomy_version": 0},
    {"player_id": PLAYER, "game_id": GAME, "taxonomy_version": "latest"},
    {"player_id": [PLAYER], "game_id": GAME},
    {"player_id": PLAYER},
])
def test_bad_scoring_requests_are_422(api, body):
    r = api.post(f"{SEG}/categorize", json=body)
    assert r.status_code == 422 and r.json()["error"] == "invalid_input"


@pytest.mark.parametrize("query", ["limit=0", "limit=100000", "min_score=-1", "min_score=nan", "since=yesterday",
                                   "game_id="])
def test_bad_listing_queries_are_422(api, query):
    params = query if query.startswith("game_id") else f"game_id={GAME}&{query}"
    r = api.get(f"{SEG}/anomalies?{params}")
    assert r.status_code == 422, r.text
