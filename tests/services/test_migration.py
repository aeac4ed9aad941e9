"""The adapter wired to the database: rollout config and audit, serving, fallback, shadow, validator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from unified_segmentation.errors import InvalidInput
from unified_segmentation.services.facade import Services
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.synth import PlantedSpec, generate_game

GAME = "mig_game"
AS_OF = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def svc(request, new_database):
    url = new_database(request.param)
    upgrade(url)
    s = Services(url)
    game = generate_game(PlantedSpec(n_players=600, seed=5, as_of=AS_OF))
    s.ingest_events(GAME, game.events)
    s.put_settings(GAME, {"default_as_of": AS_OF.isoformat()})
    s.calibrate(GAME, force=True)
    yield s
    s.close()


def test_rollout_config_audit_and_rollback(svc):
    assert svc.get_rollout(GAME)["strategy"] == "parallel_only"
    svc.put_rollout(GAME, {"strategy": "gradual_rollout", "percentage": 10}, actor="alice")
    cfg = svc.put_rollout(GAME, {"percentage": 50}, actor="bob")
    assert (cfg["strategy"], cfg["percentage"]) == ("gradual_rollout", 50.0)
    assert [a["actor"] for a in cfg["audit"][:2]] == ["bob", "alice"]
    back = svc.rollback_rollout(GAME, actor="carol")
    assert back["percentage"] == 10.0 and back["audit"][0]["action"] == "rollback"
    with pytest.raises(InvalidInput):
        svc.put_rollout(GAME, {"strategy": "sideways"})


def test_serving_by_strategy_and_fallback(svc, monkeypatch):
    svc.put_rollout(GAME, {"strategy": "parallel_only"}, actor="t")
    p = svc.profile(GAME, "test_player")
    assert p["served_by"] == "legacy" and p["fallback"] is False
    assert p["primary_segments"]["engagement"] in {"casual", "regular", "hardcore"}
    forced = svc.profile(GAME, "test_player", force_unified=True)
    assert forced["served_by"] == "unified"
    svc.put_rollout(GAME, {"strategy": "full_rollout"}, actor="t")
    assert svc.profile(GAME, "test_player")["served_by"] == "unified"

    def broken(game_id, player_id):
        raise RuntimeError("unified down")

    monkeypatch.setattr(svc, "unified_compat", broken)
    before = svc.router.counters()["fallbacks"]
    fb = svc.profile(GAME, "test_player")
    assert fb["served_by"] == "legacy" and fb["fallback"] is True
    assert svc.router.counters()["fallbacks"] == before + 1


def test_shadow_records_and_report(svc):
    svc.put_rollout(GAME, {"strategy": "shadow_mode", "shadow_sample": 100}, actor="t")
    for pid in ("test_player", "p000001", "p000002"):
        assert svc.profile(GAME, pid)["served_by"] == "legacy"
    assert svc.router.drain(timeout=30)
    report = svc.rollout_report(GAME)
    assert report["router"]["shadow_runs"] >= 3
    assert report["runs"] >= 3 and report["compared"] + report["errors"] == report["runs"]
    assert report["errors"] == 0 and report["compared"] >= 3
    assert report["latency_ms"]["unified"]["p50"] is not None


def test_validator_report_is_persisted(svc):
    report = svc.validate(GAME, sample=200)
    assert report["sample_size"] == 200
    assert 0.0 <= report["equivalence_rate"] <= 1.0
    assert set(report["classes"]) == {"equivalent", "minor", "significant"}
    assert "monetization" in report["name_map"]
    again = svc.get_validation(GAME, report["id"])
    assert again["equivalence_rate"] == report["equivalence_rate"]
    assert svc.list_validations(GAME)[0]["id"] == report["id"]


def test_validate_long_after_the_data_ends(svc):
    """No default_as_of: the current window (now) is empty, so optional metrics are absent from it; the
    validator reads them as 0 instead of failing (it raised KeyError: 'night_play_share')."""
    svc.put_settings(GAME, {"default_as_of": None})
    try:
        report = svc.validate(GAME, sample=40)
    finally:
        svc.put_settings(GAME, {"default_as_of": AS_OF.isoformat()})
    assert report["game_id"] == GAME and report["sample_size"] == 40
