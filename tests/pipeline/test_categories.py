"""Seed categories not covered elsewhere: contextual centers, outcomes, top-7, coverage, aggregation,
critical axes, contextual thresholds, edge cases (degenerate axes, tiny games)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import unified_segmentation as us
from unified_segmentation.errors import NotEnoughData
from unified_segmentation.features import events_to_daily
from unified_segmentation.pipeline import run_detection, score_profiles
from unified_segmentation.pipeline.anomalies import CUT, OTHER_WEIGHT
from unified_segmentation.synth import PlantedSpec, generate_game


@pytest.fixture(scope="module")
def game_tax():
    game = generate_game(PlantedSpec(n_players=2500, seed=21))
    tax = us.calibrate(game.events, game_id="cat", as_of=game.as_of, outcomes=game.outcomes)
    return game, tax


def test_contextual_centers_and_outcomes(game_tax):
    _, tax = game_tax
    temporal = tax.axis("temporal")
    weekend_seg = next(s for s in temporal.segments if s.segment_name == "weekend_warrior")
    wk, we = weekend_seg.contextual_centers["weekday"], weekend_seg.contextual_centers["weekend"]
    assert wk is not None and we is not None and not np.allclose(wk, we)
    assert all(s.contextual_centers["holiday"] is None for s in temporal.segments)  # no holiday calendar set
    mon = {s.segment_name: s for s in tax.axis("monetization").segments}
    assert mon["whale"].outcomes["ltv_mean"] > mon["minnow"].outcomes["ltv_mean"] > mon["non_payer"].outcomes[
        "ltv_mean"]
    assert mon["whale"].outcomes["ltv_correlation"] > 0 > mon["non_payer"].outcomes["ltv_correlation"]
    eng = {s.segment_name: s for s in tax.axis("engagement").segments}
    assert eng["casual"].outcomes["churn_rate"] > eng["hardcore"].outcomes["churn_rate"]
    assert abs(sum(s.population_percentage for s in tax.axis("social").segments) - 100) < 1e-6


def test_top7_multi_membership_and_coverage(game_tax):
    game, tax = game_tax
    ps = score_profiles(tax, events_to_daily(game.events), game.as_of)
    n_axes = len(ps.axes)
    assert ps.top_axis.shape[1] == 7
    for i in range(0, len(ps.player_ids), 97):
        axes = [a for a in ps.top_axis[i] if a >= 0]
        assert max(np.bincount(axes)) <= 2
        first = min(n_axes, 7)
        # primaries first: the first entries are each axis's primary
        for j in range(first):
            a = ps.axes[ps.top_axis[i, j]]
            assert ps.top_segment[i, j] == a.scores.primary[i]
    assert np.all((ps.variance_coverage <= 1.0) & (ps.variance_coverage > -1.0))
    assert np.median(ps.variance_coverage) > 0.5
    strengths = ps.axis_scores("monetization").scores.strength
    assert ((strengths > 0.01).sum(axis=1) >= 2).any()  # fuzzy: some players belong to several segments


def test_overall_is_max_of_weighted_axes_and_contextual_thresholds(game_tax):
    game, tax = game_tax
    daily = events_to_daily(game.events)
    res = run_detection(tax, daily, game.as_of)
    weighted = np.stack([d["anomaly_score"] * (1.0 if tax.axis(a).critical else OTHER_WEIGHT)
                         for a, d in res.axes.items()], axis=1)
    assert np.allclose(res.overall_score, weighted.max(axis=1))
    assert np.array_equal(res.is_anomalous, (res.overall_score > CUT) & ~res.insufficient)
    # a non-critical axis at full score is not enough alone to reach a critical one's weight
    assert OTHER_WEIGHT < 1.0 and tax.axis("monetization").critical and not tax.axis("temporal").critical
    # context multipliers scale the thresholds
    tax.settings["context_multipliers"] = {"weekday": 2.0, "weekend": 2.0, "holiday": 2.0}
    try:
        strict = run_detection(tax, daily, game.as_of)
    finally:
        tax.settings["context_multipliers"] = {"weekday": 1.0, "weekend": 1.0, "holiday": 1.25}
    a = "engagement"
    assert np.allclose(strict.axes[a]["threshold"], 2 * res.axes[a]["threshold"])
    assert strict.is_anomalous.sum() <= res.is_anomalous.sum()
    assert res.context in {"weekday", "weekend", "holiday"}
    new = game.truth.filter(pl.col("typical_exposure_days") < 7)["player_id"].to_list()
    idx = [res.player_ids.index(p) for p in new[:20]]
    assert all(res.insufficient[i] and not res.is_anomalous[i] and res.confidence[i] == 0 for i in idx)


def test_degenerate_axes_and_tiny_games():
    game = generate_game(PlantedSpec(n_players=400, seed=2, payer_shares=(1.0, 0.0, 0.0, 0.0),
                                     social_per_session=(0.0, 0.0, 0.0)))
    tax = us.calibrate(game.events, game_id="deg", as_of=game.as_of)
    for axis in ("monetization", "social"):
        a = tax.axis(axis)
        assert a.degenerate and a.segments[0].segment_name == f"{axis}_none" and a.degenerate_reason
    assert not tax.axis("engagement").degenerate
    prof = us.categorize(tax, game.events, as_of=game.as_of)
    assert prof.filter(pl.col("axis") == "monetization")["segment_name"].unique().to_list() == ["monetization_none"]
    assert prof["membership_probability"].is_finite().all()
    det = us.detect_anomalies(tax, game.events, as_of=game.as_of, detail=True)
    assert "monetization" not in det["axis"].unique().to_list()
    tiny = generate_game(PlantedSpec(n_players=12, seed=1))
    with pytest.raises(NotEnoughData):
        us.calibrate(tiny.events, game_id="tiny", as_of=tiny.as_of)
