"""Calibration numerics: k selection, acceptance rule, covariances, variance explained, PCA/varimax."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from sklearn.metrics import adjusted_rand_score

from unified_segmentation.core.calibration import (
    RuleConstants,
    fit_axis,
    half_sample_stability,
    null_variance_explained,
    plan_game_specific_axes,
    shrunk_covariances,
    varimax,
    varying_metrics,
)
from unified_segmentation.core.naming import name_segments
from unified_segmentation.core.transform import MetricScaler


def blobs(n, centers, shares, scale=0.35, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(centers), size=n, p=shares)
    X = np.asarray(centers)[labels] + rng.normal(scale=scale, size=(n, len(centers[0])))
    return X, labels


def test_recovers_k_and_labels_with_a_small_tier():
    X, y = blobs(6000, [[0, 0], [6, 0], [0, 6], [6, 6]], [0.5, 0.3, 0.19, 0.01])
    fit = fit_axis(X, RuleConstants())
    assert fit.k == 4
    assert adjusted_rand_score(y, fit.labels) > 0.97
    assert fit.variance_explained > 0.85
    assert fit.variance_explained >= fit.variance_explained_null + 0.15


def test_sweep_on_a_subsample_then_refit_on_the_whole_sample():
    """k is swept on ``sweep_sample`` players; the chosen k is refitted on the whole sample and every
    player gets the nearest center of that fit."""
    X, y = blobs(6000, [[0, 0], [6, 0], [0, 6], [6, 6]], [0.5, 0.3, 0.19, 0.01], seed=1)
    rules = RuleConstants(sweep_sample=1500)
    fit = fit_axis(X, rules)
    assert fit.k == 4
    assert sorted(fit.inertias) == [2, 3, 4, 5, 6, 7, 8]
    assert adjusted_rand_score(y, fit.labels) > 0.97
    assert fit.counts.min() >= 0.005 * len(X)  # the 1 % tier survives
    d2 = ((X[:, None, :] - fit.centers[None]) ** 2).sum(-1)
    assert (d2.argmin(axis=1) == fit.labels).mean() > 0.999
    # the same answer as sweeping on every player
    full = fit_axis(X, RuleConstants())
    assert full.k == 4
    assert adjusted_rand_score(full.labels, fit.labels) > 0.99
    assert fit.variance_explained == pytest.approx(full.variance_explained, abs=1e-3)


def test_sample_and_sweep_subsamples_assign_everyone():
    X, y = blobs(5000, [[0.0], [5.0], [10.0]], [0.5, 0.35, 0.15], scale=0.5, seed=2)
    fit = fit_axis(X, RuleConstants(sample_size=2000, sweep_sample=800))
    assert fit.k == 3
    assert len(fit.labels) == len(X) and fit.counts.sum() == len(X)
    assert adjusted_rand_score(y, fit.labels) > 0.98


def test_half_sample_stability_separates_structure_from_noise():
    X, _ = blobs(6000, [[0, 0], [6, 0], [0, 6], [6, 6]], [0.5, 0.3, 0.19, 0.01])
    rules = RuleConstants()
    assert half_sample_stability(X, 4, rules, seed=1) > 0.99
    G = np.random.default_rng(0).normal(size=(4000, 2))  # isotropic: every 4-way cut is arbitrary
    assert half_sample_stability(G, 4, rules, seed=1) < 0.5
    assert half_sample_stability(G[:100], 4, rules, seed=1) is None  # halves too small for 4 x 20 players


def test_irreproducible_k_is_rejected():
    G = np.random.default_rng(0).normal(size=(4000, 2))
    fit = fit_axis(G, RuleConstants())
    assert fit.knee == 4
    assert any(n.startswith("k=4 rejected: half-sample stability") for n in fit.notes)
    assert fit.k < 4 and fit.stability >= 0.5
    off = fit_axis(G, RuleConstants(min_stability=0.0))
    assert off.k == 4 and off.stability is None


def test_null_is_kmeans_on_one_gaussian_with_the_axis_covariance():
    """Optimal 3-means of a 1-D Gaussian explains 0.810 of its variance whatever the data's shape: a
    one-dimensional (ordered) axis with 3 segments can beat its null by at most 0.19."""
    X, _ = blobs(20000, [[0.0], [5.0], [10.0]], [0.5, 0.35, 0.15], scale=0.5, seed=2)
    assert null_variance_explained(X, 3, RuleConstants()) == pytest.approx(0.810, abs=0.005)
    assert null_variance_explained(X * 7.0 + 3.0, 3, RuleConstants()) == pytest.approx(0.810, abs=0.005)
    # an elongated 2-D cloud: the null follows the covariance, about 0.81 x the long axis's variance share
    G = np.random.default_rng(0).multivariate_normal([0, 0], np.diag([4.0, 1.0]), size=20000)
    assert null_variance_explained(G, 3, RuleConstants()) == pytest.approx(0.81 * 4 / 5, abs=0.01)
    H = np.random.default_rng(0).multivariate_normal([0, 0], np.diag([1.0, 1.0]), size=20000)
    assert null_variance_explained(H, 3, RuleConstants()) < 0.6


def test_pure_noise_is_weak_or_flagged():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 1))
    fit = fit_axis(X, RuleConstants())
    # K-means reaches a high variance explained on 1-D noise; the null shows it is not structure
    assert fit.variance_explained - fit.variance_explained_null < 0.15


def test_tiny_segment_rejected_by_acceptance_rule():
    X, _ = blobs(2000, [[0.0], [5.0]], [0.995, 0.005], scale=0.3)  # 10 players < 20
    fit = fit_axis(X, RuleConstants())
    assert fit.counts.min() >= 20 or fit.weak_structure


def test_covariances_never_singular():
    Z = np.zeros((100, 3))
    Z[:50, 0] = 1.0  # two point masses: raw covariance zero
    labels = (Z[:, 0] == 0).astype(int)
    _, covs, counts, lam = shrunk_covariances(Z, labels, 2, RuleConstants())
    assert lam == pytest.approx(1e-3)
    for c in covs:
        assert np.all(np.linalg.eigvalsh(c) > 0)


def test_covariance_centers_are_member_means():
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(500, 3))
    labels = rng.integers(0, 3, 500)
    centers, covs, counts, lam = shrunk_covariances(Z, labels, 3, RuleConstants())
    for s in range(3):
        assert np.allclose(centers[s], Z[labels == s].mean(axis=0), rtol=1e-12, atol=1e-12)
        assert counts[s] == (labels == s).sum()
        assert np.allclose(covs[s] - lam * np.eye(3), LedoitWolf().fit(Z[labels == s]).covariance_, atol=1e-12)


def test_small_segment_uses_pooled_covariance():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 3))
    labels = np.zeros(200, dtype=int)
    labels[:4] = 1  # 4 < 2p+1 = 7
    _, covs, _, lam = shrunk_covariances(Z, labels, 2, RuleConstants())
    assert np.all(np.linalg.eigvalsh(covs[1]) >= lam - 1e-12)


def test_varying_metrics():
    X = np.zeros((1000, 3))
    X[:10, 1] = 1.0  # varies for only 10 players
    X[:, 2] = np.arange(1000)
    assert varying_metrics(X, 20).tolist() == [False, False, True]


def test_varimax_keeps_communalities():
    rng = np.random.default_rng(0)
    L = rng.normal(size=(6, 2))
    R = varimax(L)
    assert np.allclose((L**2).sum(axis=1), (R**2).sum(axis=1))


def test_game_specific_pca_groups_correlated_metrics():
    rng = np.random.default_rng(0)
    style = rng.integers(0, 2, 5000)
    build = style * 3 + rng.normal(size=5000) * 0.5
    raid = (1 - style) * 3 + rng.normal(size=5000) * 0.5
    quest = rng.normal(size=5000)
    Z = np.column_stack([build, raid, quest])
    Z = (Z - Z.mean(0)) / Z.std(0)
    plans, ratios = plan_game_specific_axes(Z)
    groups = sorted(sorted(p.metrics) for p in plans)
    assert [0, 1] in groups
    assert sum(ratios) >= 0.80


def test_scaler_round_trip():
    X = np.abs(np.random.default_rng(0).lognormal(size=(100, 3)))
    sc = MetricScaler(metrics=["a", "b", "c"], log1p=[True, False, True]).fit(X)
    assert np.allclose(sc.inverse_transform(sc.transform(X)), X, rtol=1e-12)
    assert np.allclose(sc.inverse_columns(sc.transform_columns(X[:, [2]], [2]), [2]), X[:, [2]])
    assert np.allclose(sc.transform(X).mean(0), 0, atol=1e-12)
    back = MetricScaler.from_dict(sc.to_dict())
    assert np.array_equal(back.transform(X), sc.transform(X))


def test_scaler_log_scale_is_the_median_positive_value():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.where(rng.random(2000) < 0.6, 0.0, rng.lognormal(-4, 1, 2000)), rng.normal(size=2000)])
    sc = MetricScaler(metrics=["rate", "x"], log1p=[True, False]).fit(X)
    assert sc.log_scale_[0] == pytest.approx(np.median(X[X[:, 0] > 0, 0]), rel=1e-12)
    assert sc.log_scale_[1] == 1.0
    # the analytic derivative matches a finite difference of the transform
    x0 = X[X[:, 0] > 0][:5].copy()  # away from the floor at 0
    h = 1e-7
    num = (sc.transform(x0 + h) - sc.transform(x0 - h)) / (2 * h)
    assert np.allclose(sc.derivative(x0), num, rtol=1e-5)
    # a taxonomy stored before log scales existed keeps its plain log1p transform
    old = sc.to_dict()
    del old["log_scale"]
    legacy = MetricScaler.from_dict(old)
    assert legacy.transform(X[:3])[:, 0] == pytest.approx((np.log1p(X[:3, 0]) - sc.mean_[0]) / sc.scale_[0])


def test_names_are_readable_ordered_unique():
    centers = [{"spend_per_day": s, "purchases_per_day": s / 10, "has_purchase": float(s > 0)}
               for s in (0.0, 3.0, 0.2, 1.0)]
    names, order = name_segments("monetization", centers)
    assert names == ["non_payer", "whale", "minnow", "dolphin"]
    assert order == [0, 2, 3, 1]
    eng = [{"sessions_per_day": r, "avg_session_minutes": 10, "active_day_share": 0.5} for r in (4, 0.4, 1.5)]
    assert name_segments("engagement", eng)[0] == ["hardcore", "casual", "regular"]
    temporal = [{"weekend_play_share": 0.8, "night_play_share": 0.1, "start_hour_sin": 0, "start_hour_cos": -1},
                {"weekend_play_share": 0.2, "night_play_share": 0.9, "start_hour_sin": 0.2, "start_hour_cos": 0.9},
                {"weekend_play_share": 0.25, "night_play_share": 0.0, "start_hour_sin": -0.87,
                 "start_hour_cos": 0.5}]
    assert name_segments("temporal", temporal)[0] == ["weekend_warrior", "night_owl", "evening_player"]
    six = [{"sessions_per_day": r, "avg_session_minutes": 10} for r in range(6)]
    assert len(set(name_segments("engagement", six)[0])) == 6
