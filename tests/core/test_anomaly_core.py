"""Anomaly statistics primitives and the legacy per-player-baseline model."""

import numpy as np
import pytest
from scipy import stats

from unified_segmentation.core import anomaly as an
from unified_segmentation.core.legacy import LegacyBaselineModel, legacy_segments


def test_shrunk_rate_moves_toward_segment_for_little_history():
    r = an.shrunk_rate([28.0, 2.0], [28.0, 2.0], [3.0, 3.0], n0=7)
    assert r[0] == pytest.approx((28 + 21) / 35)
    assert r[1] == pytest.approx((2 + 21) / 9)


def test_count_p_values_match_scipy():
    p, sign = an.count_p_value([0, 10, 3], [3.0, 3.0, 3.0], 0.0)
    assert p[0] == pytest.approx(min(1, 2 * stats.poisson.cdf(0, 3)))
    assert p[1] == pytest.approx(2 * stats.poisson.sf(9, 3))
    assert sign.tolist() == [-1, 1, 0]
    pnb, _ = an.count_p_value([10], [3.0], 0.5)
    assert pnb[0] > p[1]  # overdispersion makes the same count less surprising


def test_dispersion_recovers_negative_binomial():
    rng = np.random.default_rng(0)
    mu = np.full(20000, 4.0)
    alpha = 0.5
    x = rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu))
    assert an.fit_dispersion(x, mu) == pytest.approx(alpha, abs=0.05)
    assert an.fit_dispersion(rng.poisson(mu), mu) == pytest.approx(0.0, abs=0.03)


def test_tail_model_is_calibrated_under_null():
    rng = np.random.default_rng(1)
    diffs = rng.standard_t(5, size=20000)
    tail = an.fit_tail(diffs)
    fresh = rng.standard_t(5, size=20000)
    p, _ = an.tail_p_value(fresh, tail)
    for a in (0.5, 0.1, 0.01):
        assert np.mean(p < a) == pytest.approx(a, rel=0.3)
    assert an.fit_tail(np.ones(5)) is None


def test_combine_is_bonferroni_and_thresholds_hit_budget():
    p = np.array([[0.01, 0.5], [1.0, 1.0]])
    surprise, p_axis, which, _ = an.combine(p, np.ones_like(p))
    assert surprise[0] == pytest.approx(-np.log10(0.02))
    assert p_axis.tolist() == [0.02, 1.0] and which[0] == 0
    rng = np.random.default_rng(2)
    null = {"a": rng.exponential(size=100000), "b": rng.exponential(size=100000)}
    th = an.null_thresholds(null, 0.004)
    for k, s in null.items():
        assert np.mean(an.anomaly_scores(s, th[k]) > 0.7) == pytest.approx(0.002, rel=0.1)


def test_directions_vocabulary():
    assert an.direction_name("monetization", "purchases", 1) == "spend_spike"
    assert an.direction_name("engagement", "sessions", -1) == "engagement_drop"
    assert an.direction_name("temporal", "night_play_share", 1) == "schedule_shift"
    assert an.direction_name("social", "social_events", 1) == "social_burst"
    assert an.direction_name("build_raid", "ev_build", -1) == "build_raid_drop"


def test_legacy_rules_are_fixed_cutoffs():
    seg = legacy_segments({"spend_per_day": np.array([0.0, 0.1, 1.0, 2.0]),
                           "sessions_per_day": np.array([0.5, 1.5, 3.5, 0.0])})
    assert seg["monetization"].tolist() == ["non_payer", "minnow", "dolphin", "whale"]
    assert seg["engagement"].tolist() == ["casual", "regular", "hardcore", "casual"]


def test_legacy_z_and_deviation_identity():
    rng = np.random.default_rng(0)
    typ = {"sessions_per_day": rng.gamma(2, 1, 500), "spend_per_day": rng.gamma(1, 1, 500)}
    cur = {k: v + rng.normal(size=500) * 0.5 for k, v in typ.items()}
    model = LegacyBaselineModel.fit(cur, typ)
    z = model.z_scores(cur, typ)
    i = model.metrics.index("sessions_per_day")
    assert np.allclose(z[:, i] * model.scale[i], cur["sessions_per_day"] - typ["sessions_per_day"])
    assert LegacyBaselineModel.from_dict(model.to_dict()).metrics == model.metrics
