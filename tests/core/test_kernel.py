"""Membership kernel: Mahalanobis distances, strengths, probabilities, typicality, extremes."""

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.stats import chi2, multivariate_normal

from unified_segmentation.core.kernel import AxisKernel, precision_cholesky


@pytest.fixture
def kernel():
    centers = np.array([[0.0, 0.0], [3.0, 1.0], [6.0, 2.0]])
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.8, 0.0], [0.0, 0.8]], [[2.0, -0.4], [-0.4, 1.0]]])
    return AxisKernel(centers, covs, [0.6, 0.3, 0.1], order=[0, 1, 2])


def test_distance_matches_scipy(kernel):
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(50, 2)) * 3
    d2 = kernel.dist_sq(Z)
    for i in range(0, 50, 7):
        for s in range(3):
            ref = mahalanobis(Z[i], kernel.centers_[s], np.linalg.inv(kernel.covariances_[s]))
            assert d2[i, s] == pytest.approx(ref**2, rel=1e-10)


def test_strength_probability_typicality(kernel):
    Z = np.array([[0.1, 0.2], [3.0, 1.0], [4.5, 1.5]])
    sc = kernel.score(Z)
    assert np.allclose(sc.strength, np.exp(-0.5 * sc.dist_sq))
    assert np.allclose(sc.probability.sum(axis=1), 1.0)
    assert np.allclose(sc.typicality, chi2.sf(sc.dist_sq, 2))
    # posterior equals a hand-computed Gaussian mixture posterior
    dens = np.stack([w * multivariate_normal(c, S).pdf(Z) for w, c, S in
                     zip([0.6, 0.3, 0.1], kernel.centers_, kernel.covariances_, strict=True)], axis=1)
    assert np.allclose(sc.probability, dens / dens.sum(axis=1, keepdims=True), rtol=1e-9)
    assert sc.primary[0] == 0 and sc.primary[1] == 1
    # a member at its own center has strength 1
    assert sc.strength[1, 1] == pytest.approx(1.0)


def test_beyond_extreme_is_extreme_member(kernel):
    far = np.array([[30.0, 10.0]])
    sc = kernel.score(far)
    assert sc.primary[0] == 2 and bool(sc.beyond_extreme[0])
    below = np.array([[-20.0, -8.0]])
    assert kernel.score(below).primary[0] == 0


def test_singular_covariance_is_a_clear_error():
    with pytest.raises(ValueError, match="positive definite"):
        precision_cholesky(np.zeros((1, 2, 2)))


def test_one_player_equals_batch(kernel):
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(100, 2)) * 2
    batch = kernel.score(Z)
    one = kernel.score(Z[37:38])
    assert np.allclose(one.probability[0], batch.probability[37])


def test_noisy_probability_lowers_confidence(kernel):
    Z = np.array([[1.6, 0.5]])
    p0 = kernel.score(Z).probability
    pn = kernel.noisy_probability(Z, np.zeros((1, 2)))
    assert np.allclose(p0, pn, rtol=1e-9)
    noisy = kernel.noisy_probability(Z, np.full((1, 2), 25.0))
    # with huge sampling noise the posterior tends to the prior shares
    assert np.allclose(noisy[0], [0.6, 0.3, 0.1], atol=0.08)
