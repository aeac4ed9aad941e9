"""The backward-compatible profile, its conversion from the unified answer, and the built-in legacy."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from unified_segmentation.adapter import BuiltinLegacy, CompatProfile, LegacyError, unified_to_compat
from unified_segmentation.core.legacy import LegacyBaselineModel, legacy_segments
from unified_segmentation.errors import PlayerNotFound

VALID = {
    "player_id": "p1", "primary_segments": {"monetization": "whale"},
    "segment_scores": {"monetization": {"whale": 0.7, "dolphin": 0.3}},
    "behavioral_baseline": {"spend_per_day": 2.5}, "confidence": 0.9,
    "timestamp": "2024-05-01T12:00:00Z", "served_by": "legacy",
}


def test_valid_profile_round_trips():
    p = CompatProfile.model_validate(VALID)
    assert p.timestamp == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert p.anomalies is None and p.fallback is False
    d = p.to_dict()
    assert d["timestamp"].startswith("2024-05-01T12:00:00")
    assert CompatProfile.model_validate(d) == p
    naive = CompatProfile.model_validate({**VALID, "timestamp": "2024-05-01T12:00:00"})
    assert naive.timestamp.tzinfo is not None


@pytest.mark.parametrize("patch", [
    {"confidence": "0.9"}, {"confidence": 1.5}, {"confidence": True},
    {"segment_scores": {"monetization": {"whale": 1.2}}},
    {"segment_scores": {"monetization": {"whale": math.nan}}},
    {"behavioral_baseline": {"spend_per_day": math.inf}},
    {"behavioral_baseline": {"spend_per_day": "2.5"}},
    {"primary_segments": {"monetization": 3}}, {"primary_segments": {"monetization": ""}},
    {"player_id": 17}, {"player_id": ""}, {"timestamp": "yesterday"}, {"timestamp": 1714564800},
    {"served_by": "studio"}, {"anomalies": {"is_anomalous": "no", "axes": {}}},
    {"anomalies": {"is_anomalous": False, "axes": {"monetization": 1}}},
])
def test_strict_validation_rejects_garbage(patch):
    with pytest.raises(ValidationError):
        CompatProfile.model_validate({**VALID, **patch})


def test_missing_field_rejected():
    body = dict(VALID)
    del body["timestamp"]
    with pytest.raises(ValidationError, match="timestamp"):
        CompatProfile.model_validate(body)


def test_unified_to_compat():
    prof = {
        "player_id": "p9", "game_id": "g", "confidence": 0.77,
        "axes": {
            "monetization": {"primary_segment": "whale_2", "confidence": 0.8, "memberships": [
                {"segment_name": "whale_2", "membership_probability": 0.85, "membership_strength": 0.4},
                {"segment_name": "dolphin", "membership_probability": 0.15, "membership_strength": 0.1}]},
            "social": {"primary_segment": "solo", "degenerate": True, "memberships": []},
        },
    }
    det = {"is_anomalous": True, "axes": {"monetization": {"is_anomalous": True, "surprise": 9.0},
                                          "social": {"is_anomalous": False}}}
    ts = datetime(2024, 1, 2, tzinfo=UTC)
    c = unified_to_compat(prof, det, {"spend_per_day": 3.0}, timestamp=ts)
    assert c.served_by == "unified" and c.fallback is False
    assert c.primary_segments == {"monetization": "whale_2", "social": "solo"}
    assert c.segment_scores == {"monetization": {"whale_2": 0.85, "dolphin": 0.15}, "social": {"solo": 1.0}}
    assert c.behavioral_baseline == {"spend_per_day": 3.0}
    assert c.confidence == 0.77 and c.timestamp == ts
    assert c.anomalies.is_anomalous is True
    assert c.anomalies.axes == {"monetization": True, "social": False}
    assert unified_to_compat(prof, None, None).anomalies is None


# ------------------------------------------------------------------------------------------- builtin

METRICS = ["spend_per_day", "sessions_per_day", "night_play_share", "weekend_play_share",
           "social_events_per_session"]
SCALE = np.array([0.5, 1.0, 0.1, 0.1, 0.2])
TYPICAL = {"spend_per_day": 2.0, "sessions_per_day": 2.0, "night_play_share": 0.6, "weekend_play_share": 0.2,
           "social_events_per_session": 0.1}


@pytest.fixture
def model():
    return LegacyBaselineModel(metrics=list(METRICS), scale=SCALE.copy(), threshold=3.0)


def test_builtin_profile_matches_core_numerics(model):
    current = dict(TYPICAL, spend_per_day=2.0 + 4 * 0.5, sessions_per_day=2.5)  # spend z = 4 > 3
    data = {("g", "p1"): (current, TYPICAL)}
    leg = BuiltinLegacy(lambda g, p: data[(g, p)], model)
    prof = leg.profile("g", "p1")
    assert prof.served_by == "legacy" and prof.confidence == 1.0
    assert prof.primary_segments == {"monetization": "whale", "engagement": "regular",
                                     "temporal": "night_owl", "social": "solo"}
    assert prof.segment_scores["monetization"] == {"whale": 1.0}
    assert prof.behavioral_baseline == TYPICAL
    # the same verdict as core.legacy's vectorized numerics
    ref = model.axis_flags({m: np.array([current[m]]) for m in METRICS}, {m: np.array([TYPICAL[m]]) for m in METRICS})
    assert prof.anomalies.axes == {ax: bool(v[0]) for ax, v in ref.items()}
    assert prof.anomalies.axes["monetization"] is True and prof.anomalies.is_anomalous is True
    assert prof.anomalies.axes["engagement"] is False
    segs = legacy_segments({m: np.array([TYPICAL[m]]) for m in METRICS})
    assert prof.primary_segments == {ax: str(v[0]) for ax, v in segs.items()}


def test_builtin_threshold_override_and_model_per_game(model):
    current = dict(TYPICAL, spend_per_day=2.0 + 2 * 0.5)  # z = 2
    leg = BuiltinLegacy(lambda g, p: (current, TYPICAL), lambda game: model)
    assert leg.profile("g", "p").anomalies.is_anomalous is False
    assert BuiltinLegacy(lambda g, p: (current, TYPICAL), model, threshold=1.5).profile("g", "p").anomalies.axes[
        "monetization"] is True


def test_builtin_without_typical_data(model):
    current = {"spend_per_day": 0.0, "sessions_per_day": 0.5, "night_play_share": float("nan")}
    prof = BuiltinLegacy(lambda g, p: (current, {}), model).profile("g", "new")
    assert prof.confidence == 0.3
    assert prof.anomalies is None
    assert prof.behavioral_baseline == {"spend_per_day": 0.0, "sessions_per_day": 0.5}
    assert prof.primary_segments == {"monetization": "non_payer", "engagement": "casual"}


def test_builtin_errors(model):
    with pytest.raises(PlayerNotFound):
        BuiltinLegacy(lambda g, p: ({}, None), model).profile("g", "ghost")

    def broken(g, p):
        raise OSError("disk gone")

    with pytest.raises(LegacyError, match="disk gone"):
        BuiltinLegacy(broken, model).profile("g", "p")
