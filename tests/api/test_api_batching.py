"""Micro-batching of the single-player routes (api/batching.py): concurrent calls are read and scored
together, and each answer is exactly the one the call gets alone; errors stay with their own call."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from unified_segmentation.api.batching import RequestBatcher
from unified_segmentation.errors import GameNotFound, PlayerNotFound

GAME = "test_game"
SEG = "/api/v1/segmentation"


def _players(seeded, n: int) -> list[str]:
    ids = sorted(seeded.game.truth["player_id"].to_list())
    return ids[:: max(1, len(ids) // n)][:n]


def _fire(client, app, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Send every request at once on the app's own event loop (the running TestClient's)."""
    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            return await asyncio.gather(*(ac.post(path, json=body) for path, body in requests))

    return client.portal.call(send_all)


def test_concurrent_calls_are_batched_and_answer_as_alone(seeded, make_client, settings_for):
    client = make_client(settings_for(seeded.url), services=seeded.services)
    app = client.app
    batcher: RequestBatcher = app.state.batcher
    players = _players(seeded, 40)
    requests = [(f"{SEG}/categorize", {"game_id": GAME, "player_id": p}) for p in players]
    requests += [(f"{SEG}/anomalies/detect", {"game_id": GAME, "player_id": p}) for p in players[:20]]
    requests += [(f"{SEG}/categorize", {"game_id": GAME, "player_id": "nobody"}),
                 (f"{SEG}/categorize", {"game_id": GAME, "player_id": players[0]}),  # the same player twice
                 (f"{SEG}/anomalies/detect", {"game_id": "no_such_game", "player_id": players[0]})]
    before = batcher.batches, batcher.batched_calls
    responses = _fire(client, app, requests)
    assert batcher.batches - before[0] >= 2  # categorize and detect batches at least
    assert batcher.batched_calls - before[1] >= 40
    for (path, body), response in zip(requests, responses, strict=True):
        alone = client.post(path, json=body)  # one call at a time: the one-player path
        assert response.status_code == alone.status_code, body
        if alone.status_code == 200:
            assert orjson.loads(response.content) == orjson.loads(alone.content), body
            assert response.content == alone.content, body
        else:
            assert response.json() == alone.json()
    assert responses[-3].status_code == 404 and "nobody" in responses[-3].json()["detail"]
    assert responses[-1].status_code == 404 and responses[-1].json()["error"] == "game_not_found"
    exposition = client.get("/metrics").text  # batch sizes are observed per kind
    sizes = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
             if line.startswith("useg_request_batch_size_sum")}
    assert sizes['kind="categorize"'] >= 40 and sizes['kind="detect"'] >= 20


def test_a_batch_that_fails_is_answered_call_by_call(seeded_sqlite):
    """An unexpected error of a batch (not a domain error) is retried one call at a time: no call fails
    for another's sake, and a domain error of the whole group reaches each of its calls."""
    services = seeded_sqlite.services
    players = _players(seeded_sqlite, 6)

    class Flaky:
        def __getattr__(self, name):
            return getattr(services, name)

        def categorize_many(self, *a, **k):
            raise RuntimeError("connection reset")

    async def run(batcher: RequestBatcher, game: str, ids: list[str]) -> list:
        return await asyncio.gather(*(batcher.categorize(game, p) for p in ids), return_exceptions=True)

    batcher = RequestBatcher(Flaky())
    answers = asyncio.run(run(batcher, GAME, [*players, "nobody"]))
    assert [a["player_id"] for a in answers[:-1]] == players
    assert isinstance(answers[-1], PlayerNotFound)
    for pid, answer in zip(players, answers, strict=False):
        assert orjson.dumps(answer) == orjson.dumps(services.categorize(GAME, pid))

    batcher = RequestBatcher(services)
    answers = asyncio.run(run(batcher, "no_such_game", players))
    assert batcher.batches == 0 and all(isinstance(a, GameNotFound) for a in answers)
    answers = asyncio.run(run(batcher, GAME, players))
    assert batcher.batches == 1 and batcher.batched_calls == len(players)


class _Counting:
    """The services, recording the players of each categorize run (1 for a one-player call)."""

    def __init__(self, services) -> None:
        self.services = services
        self.runs: list[int] = []

    def __getattr__(self, name):
        return getattr(self.services, name)

    def categorize_many(self, game_id, ids, **kw):
        self.runs.append(len(ids))
        return self.services.categorize_many(game_id, ids, **kw)

    def categorize(self, game_id, pid, **kw):
        self.runs.append(1)
        return self.services.categorize(game_id, pid, **kw)


def test_batching_can_be_turned_off_and_is_bounded(seeded_sqlite):
    players = _players(seeded_sqlite, 10)

    async def run(batcher: RequestBatcher) -> list:
        return await asyncio.gather(*(batcher.categorize(GAME, p) for p in players))

    off = RequestBatcher(counting := _Counting(seeded_sqlite.services), enabled=False)
    assert [a["player_id"] for a in asyncio.run(run(off))] == players and counting.runs == [1] * 10
    small = RequestBatcher(counting := _Counting(seeded_sqlite.services), max_batch=4)
    assert [a["player_id"] for a in asyncio.run(run(small))] == players
    assert counting.runs == [4, 4, 2] and small.batches == 3  # 10 calls, at most 4 at once


@pytest.mark.parametrize(("limit", "enabled"), [(0, False), (1, False), (2, True), (None, True)])
def test_the_setting_turns_batching_off(make_client, fake_services, settings_for, limit, enabled):
    overrides = {} if limit is None else {"request_batch_max": limit}
    client = make_client(settings_for(**overrides), services=fake_services)
    batcher = client.app.state.batcher
    assert batcher.enabled is enabled and batcher.max_batch == max(1, limit if limit is not None else 64)


def test_hot_routes_document_the_same_key_security_as_the_others(make_client, fake_services):
    spec = make_client(services=fake_services).get("/openapi.json").json()
    expected = spec["paths"]["/api/v1/segmentation/taxonomy/{game_id}"]["get"]["security"]
    for path in ("/api/v1/segmentation/categorize", "/api/v1/segmentation/anomalies/detect"):
        assert spec["paths"][path]["post"]["security"] == expected
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])


def test_under_concurrency_a_batch_lingers_for_more_calls(seeded_sqlite):
    """After a run of two calls or more, the next batch waits ``linger_s`` for company; a lone call (the
    last run held one) never waits, and a batch that fills up runs at once."""
    players = _players(seeded_sqlite, 8)
    counting = _Counting(seeded_sqlite.services)
    runs = counting.runs

    async def staggered(batcher: RequestBatcher, ids: list[str]) -> list:
        """One call per turn of the loop: without lingering, each would run alone."""
        tasks = []
        for pid in ids:
            tasks.append(asyncio.ensure_future(batcher.categorize(GAME, pid)))
            await asyncio.sleep(0)
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)

    async def scenario(linger_s: float, max_batch: int = 64) -> None:
        batcher = RequestBatcher(counting, linger_s=linger_s, max_batch=max_batch)
        assert await asyncio.wait_for(batcher.categorize(GAME, players[0]), timeout=5)  # alone: no wait
        await asyncio.gather(*(batcher.categorize(GAME, p) for p in players[:2]))  # a run of two: busy
        answers = await staggered(batcher, players[2:5])
        assert [a["player_id"] for a in answers] == players[2:5]

    asyncio.run(scenario(0.0))
    assert runs == [1, 2, 1, 1, 1]  # no lingering: each staggered call ran at the next turn, alone
    runs.clear()
    asyncio.run(scenario(1.0))
    assert runs == [1, 2, 3]  # lingering: the three staggered calls ran together
    runs.clear()
    asyncio.run(scenario(30.0, max_batch=3))  # a full batch runs at once (wait_for would time out)
    assert runs == [1, 2, 3]
