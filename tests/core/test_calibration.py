"""Calibration numerics: k selection, acceptance rule, covariances, variance explained, PCA/varimax."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from unified_segmentation.core.calibration import (
    RuleConstants,
    fit_axis,
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
