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


# ---------------------------------------------------------------------------- rate priors, amounts
def _windows(rates: np.ndarray, rng: np.random.Generator, e_typ: float = 20.0, e_cur: float = 6.0):
    n = len(rates)
    e = np.full(n, e_typ)
    ec = np.full(n, e_cur)
    return rng.poisson(rates * e), e, rng.poisson(rates * ec), ec


def test_rate_prior_is_strong_for_a_homogeneous_segment_and_weak_for_a_mixed_one():
    rng = np.random.default_rng(3)
    b0_same, alpha_same = an.fit_rate_prior(*_windows(np.full(4000, 0.15), rng))
    assert b0_same >= 200 and alpha_same <= 0.01
    # gamma rates with shape 2 around 0.15: the true prior strength is b0 = 2/0.15 ≈ 13 active days
    b0_mixed, _ = an.fit_rate_prior(*_windows(rng.gamma(2.0, 0.15 / 2.0, 4000), rng))
    assert 5 <= b0_mixed <= 40
    assert an.fit_rate_prior(np.zeros(50), np.full(50, 20.0), np.zeros(50), np.full(50, 6.0)) == (0.0, 0.0)


def test_rate_prior_makes_a_minnow_spike_surprising():
    """A minnow (0.15 purchases per active day) whose short history happened to be busy (2 purchases in
    4 active days), then 8 purchases in 6: with the segment's fitted prior the count is far out in the
    tail; with the weak fixed n0 (own history dominates) it is not."""
    rng = np.random.default_rng(4)
    b0, alpha = an.fit_rate_prior(*_windows(rng.gamma(40.0, 0.15 / 40.0, 4000), rng))
    m = 0.15
    mu_prior = an.shrunk_rate(2, 4, m, b0) * 6
    assert mu_prior == pytest.approx(0.9, rel=0.15)
    p_prior, sign = an.count_p_value([8], [mu_prior], 1.0 / (b0 * m + 2) + alpha)
    mu_n0 = an.shrunk_rate(2, 4, m, 7.0) * 6
    p_n0, _ = an.count_p_value([8], [mu_n0], 0.26)  # the old segment-wide moment dispersion
    assert p_prior[0] < 1e-4 and sign[0] == 1
    assert p_prior[0] < p_n0[0] / 10
    # a steady minnow (one purchase in the week) stays unremarkable
    assert an.count_p_value([1], [mu_prior], 1.0 / (b0 * m + 2) + alpha)[0][0] > 0.3


def _amounts(rng: np.random.Generator, n: int, level: np.ndarray, n_events: np.ndarray) -> np.ndarray:
    """Log of the mean of ``n_events`` log-normal (σ = 1) amounts per player around exp(level)."""
    out = np.zeros(n)
    for i in range(n):
        if n_events[i] > 0:
            out[i] = np.log(np.mean(np.exp(level[i] + rng.standard_normal(int(n_events[i])))))
    return out


def test_amount_model_is_calibrated_and_flags_a_big_ticket():
    rng = np.random.default_rng(5)
    n = 6000
    level = np.log(2.0) + 0.3 * rng.standard_normal(n)
    n_typ = rng.poisson(4.0, n).astype(float)
    n_cur = rng.poisson(1.5, n).astype(float)
    log_typ = _amounts(rng, n, level, n_typ)
    model = an.fit_amount_model(_amounts(rng, n, level, n_cur), n_cur, log_typ, n_typ)
    assert model is not None and model.level == pytest.approx(np.log(2.0) + 0.5, abs=0.2)
    assert 0.5 < model.s2 < 2.0 and model.k0 > 0
    assert an.AmountModel.from_dict(model.to_dict()) == model
    # fresh null week: calibrated; the shrunk level sits between the player's and the segment's
    n_new = rng.poisson(1.5, n).astype(float)
    z, ell = an.amount_z(_amounts(rng, n, level, n_new), n_new, log_typ, n_typ, model.level, model.s2, model.k0)
    p, _ = an.tail_p_value(z[n_new > 0], model.tail)
    for a in (0.1, 0.01):
        assert 0.5 * a < np.mean(p < a) < 1.6 * a
    # one purchase at 100× the player's usual amount: a spend spike by amount alone
    big = np.log(100.0) + level[:1] + 0.5
    zb, _ = an.amount_z(big, [1.0], log_typ[:1], n_typ[:1], model.level, model.s2, model.k0)
    pb, sb = an.tail_p_value(zb, model.tail)
    assert pb[0] < 1e-3 and sb[0] == 1
    assert an.fit_amount_model(np.zeros(10), np.zeros(10), np.zeros(10), np.zeros(10)) is None


def test_log_amounts_need_both_a_count_and_an_amount():
    log_v, n = an.log_amounts([10.0, 0.0, 5.0], [2.0, 3.0, 0.0])
    assert log_v[0] == pytest.approx(np.log(5.0)) and n.tolist() == [2.0, 0.0, 0.0]


def test_combine_counts_only_the_metrics_tested():
    p = np.array([[0.01, 1.0, 1.0], [0.01, 0.5, 0.5]])
    tested = np.array([[True, False, False], [True, True, True]])
    surprise, p_axis, _, _ = an.combine(p, np.ones_like(p), tested)
    assert surprise[0] == pytest.approx(2.0) and surprise[1] == pytest.approx(-np.log10(0.03))
    assert p_axis.tolist() == pytest.approx([0.01, 0.03])


def test_calibrator_of_an_all_zero_null_does_not_explode():
    """A segment whose null is almost all zeros (non-payers) has no tail to extrapolate from: beyond
    the grid a unit of raw surprise counts as a decade, not hundreds."""
    cal = an.SurpriseCalibrator.fit(np.zeros(5000))
    assert cal.tail_rate == pytest.approx(1.0)
    assert cal(np.array([5.0]))[0] < 10.0
    s = np.zeros(5000)
    s[:3] = [0.5, 1.0, 2.0]
    cal = an.SurpriseCalibrator.fit(s)
    assert cal.tail_rate <= an.MAX_TAIL_RATE and cal(np.array([5.0]))[0] < 10.0
    rng = np.random.default_rng(6)
    null = -np.log10(rng.uniform(size=20000))  # exact p-values: calibrated surprise ≈ raw
    cal = an.SurpriseCalibrator.fit(null)
    fresh = -np.log10(rng.uniform(size=200000))
    for t in (2.0, 3.0):
        assert np.mean(cal(fresh) > t) == pytest.approx(10.0**-t, rel=0.5)


def test_count_p_value_equals_scipy_stats_tails():
    rng = np.random.default_rng(7)
    n = 4000
    mu = rng.lognormal(0.0, 1.5, n)
    count = rng.poisson(mu * rng.lognormal(0.0, 0.7, n)).astype(float)
    alpha = np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(-1.0, 1.5, n))
    p, sign = an.count_p_value(count, mu, alpha)
    expected = np.empty(n)
    pois = alpha < 1e-6
    expected[pois] = 2 * np.minimum(stats.poisson.cdf(count[pois], mu[pois]),
                                    stats.poisson.sf(count[pois] - 1, mu[pois]))
    size = 1.0 / alpha[~pois]
    prob = size / (size + mu[~pois])
    expected[~pois] = 2 * np.minimum(stats.nbinom.cdf(count[~pois], size, prob),
                                     stats.nbinom.sf(count[~pois] - 1, size, prob))
    expected = np.maximum(np.minimum(expected, 1.0), an.P_FLOOR)
    assert np.allclose(p, expected, rtol=1e-9, atol=1e-300)
    assert np.array_equal(sign, np.sign(count - mu))
