"""The hot-route layer (api/hot.py) answers exactly as the FastAPI routes behind it.

A call with a query string goes down the normal path (the layer passes it on; FastAPI ignores the
unknown parameter), so each call below is made both ways and the two answers compared byte for byte.
``app.state.hot_routes.served`` counts the calls the layer answered itself.
"""

from __future__ import annotations

import logging

import pytest

GAME, PLAYER = "test_game", "test_player"  # the seeded game (conftest.py)
CAT, DET = "/api/v1/segmentation/categorize", "/api/v1/segmentation/anomalies/detect"


def _both(client, path: str, **kwargs):
    """(hot answer, normal answer) of the same call, checking which path served each."""
    hot_routes = client.app.state.hot_routes
    before = hot_routes.served
    hot = client.post(path, **kwargs)
    assert hot_routes.served == before + 1, "the layer did not answer"
    normal = client.post(path + "?path=normal", **kwargs)
    assert hot_routes.served == before + 1, "the layer answered a call with a query string"
    return hot, normal


def _same(hot, normal) -> None:
    assert hot.status_code == normal.status_code, (hot.text, normal.text)
    assert hot.content == normal.content
    for header in ("content-type", "content-length", "www-authenticate", "retry-after"):
        assert hot.headers.get(header) == normal.headers.get(header), header
    assert hot.headers["x-request-id"] and hot.headers["x-request-id"] != normal.headers["x-request-id"]


@pytest.fixture
def client(make_client, settings_for, seeded):
    return make_client(settings_for(seeded.url), services=seeded.services)


def test_answers_equal_the_normal_path(client, seeded):
    players = [PLAYER, *seeded.game.truth["player_id"].to_list()[1:6]]
    as_of = seeded.game.as_of.isoformat()
    for pid in players:
        for path in (CAT, DET):
            hot, normal = _both(client, path, json={"game_id": GAME, "player_id": pid})
            assert hot.status_code == 200 and hot.json()["player_id"] == pid
            _same(hot, normal)
    hot, normal = _both(client, CAT, json={"game_id": GAME, "player_id": PLAYER, "as_of": as_of,
                                           "taxonomy_version": 1})
    assert hot.status_code == 200 and hot.json()["taxonomy_version"] == 1
    _same(hot, normal)
    hot, normal = _both(client, DET, json={"game_id": GAME, "player_id": PLAYER, "as_of": as_of},
                        headers={"Content-Type": "application/json; charset=utf-8"})
    _same(hot, normal)


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    (CAT, {"game_id": GAME, "player_id": "nobody_here"}, 404, "player_not_found"),
    (DET, {"game_id": GAME, "player_id": "nobody_here"}, 404, "player_not_found"),
    (CAT, {"game_id": "no_such_game", "player_id": PLAYER}, 404, "game_not_found"),
    (DET, {"game_id": "no_such_game", "player_id": PLAYER}, 404, "game_not_found"),
    (CAT, {"game_id": GAME, "player_id": PLAYER, "taxonomy_version": 999}, 404, "taxonomy_not_found"),
])
def test_errors_equal_the_normal_path(client, path, body, status, error):
    hot, normal = _both(client, path, json=body)
    assert hot.status_code == status and hot.json()["error"] == error, hot.text
    _same(hot, normal)


@pytest.mark.parametrize(("content", "headers", "status", "error"), [
    (b'{"game_id": "test_game", "player_id": ', {"Content-Type": "application/json"}, 400, "malformed_json"),
    (b'{"game_id": "test_game"}', {"Content-Type": "application/json"}, 422, "invalid_input"),
    (b'{"game_id": "test_game", "player_id": "x", "extra": 1}', {"Content-Type": "application/json"}, 422,
     "invalid_input"),
    (b'{"game_id": "test_game", "player_id": NaN}', {"Content-Type": "application/json"}, 422, "invalid_input"),
    (b'["test_game", "test_player"]', {"Content-Type": "application/json"}, 422, "invalid_input"),
    (b'{"game_id": "test_game", "player_id": "test_player"}', {"Content-Type": "text/plain"}, 422, "invalid_input"),
    (b'{"game_id": "test_game", "player_id": "test_player"' + b" " * 20_000 + b"}",
     {"Content-Type": "application/json"}, 200, None),
])
def test_other_calls_go_down_the_normal_path(client, content, headers, status, error):
    """Bodies that do not parse, validate or fit, and other content types: the layer passes them on
    untouched (the body it read is replayed), and the normal path answers as it always did."""
    served = client.app.state.hot_routes.served
    for path in (CAT, DET):
        r = client.post(path, content=content, headers=headers)
        assert r.status_code == status, r.text
        if error is not None:
            assert r.json()["error"] == error
            assert r.json()["detail"]
        else:
            assert r.json()["player_id"] == PLAYER
    assert client.app.state.hot_routes.served == served


def test_keys_are_checked_as_on_the_normal_path(make_client, settings_for, seeded):
    client = make_client(settings_for(seeded.url, auth="required", rate_limit_per_minute=0),
                         services=seeded.services)
    read, _ = seeded.services.create_api_key("read")
    elsewhere, _ = seeded.services.create_api_key("admin", games=["another_game"])
    body = {"game_id": GAME, "player_id": PLAYER}
    for path in (CAT, DET):
        hot, normal = _both(client, path, json=body)
        assert hot.status_code == 401 and hot.headers["www-authenticate"] == "Bearer"
        _same(hot, normal)
        hot, normal = _both(client, path, json=body, headers={"Authorization": f"Bearer {elsewhere}"})
        assert hot.status_code == 403 and hot.json()["error"] == "forbidden"
        _same(hot, normal)
        hot, normal = _both(client, path, json=body, headers={"X-API-Key": read})
        assert hot.status_code == 200
        _same(hot, normal)


def test_rate_limit_answers_429_with_retry_after(make_client, settings_for, seeded):
    client = make_client(settings_for(seeded.url, auth="required", rate_limit_per_minute=2),
                         services=seeded.services)
    key, _ = seeded.services.create_api_key("read")
    body, headers = {"game_id": GAME, "player_id": PLAYER}, {"X-API-Key": key}
    assert [client.post(CAT, json=body, headers=headers).status_code for _ in range(2)] == [200, 200]
    hot, normal = _both(client, CAT, json=body, headers=headers)  # the 3rd and 4th calls of the minute
    assert hot.status_code == 429 and int(hot.headers["retry-after"]) >= 1
    assert hot.json()["error"] == normal.json()["error"] == "rate_limited"


def test_the_route_labels_the_access_log_and_latency_metrics(client, caplog):
    with caplog.at_level(logging.INFO, logger="unified_segmentation.access"):
        r = client.post(CAT, json={"game_id": GAME, "player_id": PLAYER}, headers={"X-Request-ID": "hot-route-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "hot-route-1"
    lines = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "hot-route-1"]
    assert len(lines) == 1 and lines[0].route == CAT and lines[0].status == 200
    text = client.get("/metrics").text
    assert f'useg_http_request_duration_seconds_count{{method="POST",route="{CAT}",status="200"}}' in text


def test_a_database_error_answers_503(client, seeded, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(seeded.services, "categorize", down)
    hot, normal = _both(client, CAT, json={"game_id": GAME, "player_id": PLAYER})
    assert hot.status_code == 503 and hot.json()["error"] == "database_unavailable"
    _same(hot, normal)


def test_cors_requests_go_down_the_normal_path(make_client, settings_for, seeded):
    client = make_client(settings_for(seeded.url, cors_origins="https://studio.example"), services=seeded.services)
    served = client.app.state.hot_routes.served
    r = client.post(CAT, json={"game_id": GAME, "player_id": PLAYER}, headers={"Origin": "https://studio.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://studio.example"
    assert client.app.state.hot_routes.served == served
    r = client.post(CAT, json={"game_id": GAME, "player_id": PLAYER})  # no Origin: served by the layer
    assert r.status_code == 200 and client.app.state.hot_routes.served == served + 1


def test_a_body_cut_short_is_passed_on_as_received():
    """The client goes away mid-body: the inner app gets the part read, then the disconnect."""
    import asyncio

    from fastapi import FastAPI

    from unified_segmentation.api.hot import HotRoutes

    seen: list[dict] = []

    async def inner(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())

    layer = HotRoutes(inner, api=FastAPI())
    messages = iter([{"type": "http.request", "body": b'{"game_id": "g", ', "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive():
        return next(messages)

    scope = {"type": "http", "method": "POST", "path": CAT, "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"40")]}
    asyncio.run(layer(scope, receive, None))
    assert seen == [{"type": "http.request", "body": b'{"game_id": "g", ', "more_body": True},
                    {"type": "http.disconnect"}]
    assert layer.served == 0


def test_the_body_limit_applies_as_on_the_normal_path(make_client, settings_for, seeded):
    client = make_client(settings_for(seeded.url, max_body_bytes=40), services=seeded.services)
    served = client.app.state.hot_routes.served
    r = client.post(CAT, json={"game_id": GAME, "player_id": PLAYER})  # 48 bytes
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert client.app.state.hot_routes.served == served
