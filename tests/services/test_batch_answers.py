"""``categorize_batch`` answers: compact and columnar answers equal the full profiles of the same players,
whether the batch is the whole game (read as a key range), a sparse list or has unknown players, on
SQLite and PostgreSQL."""

from __future__ import annotations

import gc

import orjson
import pytest

from unified_segmentation.services.facade import Services
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.synth import generate_daily

GAME = "batch_answers"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def svc(request, new_database):
    url = new_database(request.param)
    upgrade(url)
    services = Services(url)
    game = generate_daily(n_players=300, seed=11)
    services.put_settings(GAME, {"default_as_of": game.as_of.isoformat()})
    services.ingest_daily(GAME, game.daily)
    services.calibrate(GAME, force=True)
    yield services, sorted(game.truth["player_id"].to_list())
    services.close()


def _compact_of(full: dict) -> dict:
    """The compact answer a full profile implies, keys in the answer's order."""
    return {
        "player_id": full["player_id"],
        "primary_segments": {axis: a["primary_segment"] for axis, a in full["axes"].items()},
        "top_segments": [[t["axis"], t["segment_name"]] for t in full["top_segments"]],
        "confidence": full["confidence"], "taxonomy_version": full["taxonomy_version"], "as_of": full["as_of"],
    }


@pytest.mark.parametrize("pick", ["whole", "sparse", "unknown"])
def test_compact_and_columnar_equal_the_full_profiles(svc, pick):
    services, ids = svc
    batch = {"whole": ids[::-1], "sparse": ids[::7], "unknown": ["ghost", *ids[40:90], "zz_ghost"]}[pick]
    full = services.categorize_batch(GAME, batch)
    compact = services.categorize_batch(GAME, batch, compact=True)
    columnar = services.categorize_batch(GAME, batch, columnar=True)
    known = sorted(p for p in batch if p in set(ids))
    assert [p["player_id"] for p in full["profiles"]] == known
    want = [_compact_of(p) for p in full["profiles"]]
    assert orjson.dumps(compact["profiles"]) == orjson.dumps(want)  # values and key order
    assert compact["errors"] == full["errors"] == columnar["errors"]
    assert [e["player_id"] for e in full["errors"]] == [p for p in batch if p not in set(ids)]
    cols = columnar["columns"]
    assert cols["player_id"] == known
    assert cols["confidence"].tolist() == [p["confidence"] for p in want]
    for i, p in enumerate(want):
        assert {axis: names[i] for axis, names in cols["primary_segments"].items()} == p["primary_segments"]
        top = [[a, s] for a, s in zip(cols["top_segments"]["axis"][i], cols["top_segments"]["segment"][i],
                                      strict=True) if a is not None]
        assert top == p["top_segments"]
    assert gc.isenabled()


def test_a_batch_of_unknown_players_only(svc):
    services, _ = svc
    for kind in ({}, {"compact": True}, {"columnar": True}):
        answer = services.categorize_batch(GAME, ["ghost"], **kind)
        assert answer["errors"] == [{"player_id": "ghost", "error": "player_not_found"}]
    assert services.categorize_batch(GAME, ["ghost"], compact=True)["profiles"] == []
