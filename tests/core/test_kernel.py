"""Membership kernel: Mahalanobis distances, strengths, probabilities, typicality, extremes."""

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.special import chdtrc
from scipy.stats import chi2, multivariate_normal

from unified_segmentation.core import _kernel_numba as _nb
from unified_segmentation.core.kernel import (
    AxisKernel,
    KernelScores,
    chi2_sf,
    dist_sq_reference,
    noisy_probability_reference,
    precision_cholesky,
    score_reference,
)


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


# --- compiled kernel (numba) against the numpy reference ---------------------------------------------

RTOL = 1e-9
TINY = 1e-300  # below this, floats are (near-)denormal and only absolutely comparable


def random_kernel(rng, k, p, ordered):
    centers = rng.normal(0.0, 2.0, size=(k, p))
    a = rng.normal(size=(k, p, p))
    covs = a @ a.transpose(0, 2, 1) / p + rng.uniform(0.05, 1.0) * np.eye(p)[None]
    weights = rng.dirichlet(np.full(k, 2.0))
    order = np.argsort(centers[:, 0]) if ordered else None
    return AxisKernel(centers, covs, weights, order=order)


def random_players(rng, ker, n):
    Z = ker.centers_[rng.integers(ker.n_segments, size=n)] + rng.normal(size=(n, ker.n_dims)) * 1.5
    if n >= 10:  # far players: posterior fallback, chi-square log tail, beyond the extremes
        Z[:5] *= 40.0
        Z[5] = ker.centers_[0] * 1e3
    return Z


def assert_scores_equal(got, ref):
    np.testing.assert_allclose(got.dist_sq, ref.dist_sq, rtol=RTOL, atol=1e-12)
    for name in ("strength", "probability", "typicality"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=RTOL, atol=TINY, err_msg=name)
    np.testing.assert_array_equal(got.primary, ref.primary)
    np.testing.assert_array_equal(got.beyond_extreme, ref.beyond_extreme)
    assert got.primary.dtype == ref.primary.dtype and got.beyond_extreme.dtype == np.bool_


@pytest.mark.parametrize("k,p", [(1, 1), (2, 1), (3, 2), (5, 6), (4, 7), (8, 3), (6, 12)])
@pytest.mark.parametrize("n", [1, 10_000])
def test_compiled_score_equals_reference(k, p, n):
    rng = np.random.default_rng(100 * k + p + n)
    for ordered in (False, True):
        ker = random_kernel(rng, k, p, ordered)
        Z = random_players(rng, ker, n)
        got, ref = ker.score(Z), score_reference(ker, Z)
        assert_scores_equal(got, ref)
        d2, strength, primary = ker.score_light(Z)
        np.testing.assert_array_equal(d2, got.dist_sq)
        np.testing.assert_array_equal(strength, got.strength)
        np.testing.assert_array_equal(primary, ref.primary)
        np.testing.assert_allclose(ker.dist_sq(Z), dist_sq_reference(ker, Z), rtol=RTOL, atol=1e-12)


def test_compiled_score_edge_cases(kernel):
    # at a center (d² ≈ 0), exactly at the extreme centers, and no players at all
    Z = np.vstack([kernel.centers_, kernel.centers_[[0, 2]]])
    assert_scores_equal(kernel.score(Z), score_reference(kernel, Z))
    assert not kernel.score(kernel.centers_).beyond_extreme.any()
    empty = kernel.score(np.empty((0, 2)))
    assert empty.probability.shape == (0, 3) and empty.primary.shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        kernel.score(np.zeros((3, 4)))
    # a non-contiguous, integer input is accepted like the reference
    Zi = np.arange(12).reshape(3, 4)[:, ::2]
    assert_scores_equal(kernel.score(Zi), score_reference(kernel, Zi.astype(float)))


def test_general_factor_path_and_reference_fallback(kernel, monkeypatch):
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(300, 2)) * 3
    ref = score_reference(kernel, Z)
    kernel._upper = False  # full (not triangular) factor loop: same sums with the zeros included
    kernel._ip[2] = 0
    assert_scores_equal(kernel.score(Z), ref)
    monkeypatch.setattr(_nb, "MAX_DOF", 1)  # dof beyond the closed forms: the numpy reference
    assert_scores_equal(kernel.score(Z), ref)


def test_compiled_loops_as_python(kernel):
    """The compiled functions' Python bodies (what coverage sees) give the same results."""
    rng = np.random.default_rng(6)
    Z = random_players(rng, kernel, 70)  # more than one block of 64
    k = kernel.n_segments
    outs = [np.empty((70, k)), np.empty((70, k)), np.empty(70, dtype=np.int64), np.empty(70, dtype=bool)]
    args = (Z, kernel._LT, kernel._shift_all, kernel._upper, kernel._logc, kernel._has_order,
            kernel._c_lo, kernel._u, kernel._norm_sq, kernel._lo, kernel._hi)
    _nb.distances_primary.py_func(*args, *outs)
    d2, strength, primary, beyond = outs
    np.exp(strength, out=strength)
    prob, typ = np.empty((70, k)), np.empty((70, k))
    with np.errstate(divide="ignore", invalid="ignore"):  # far rows: redone by the fallback
        _nb.posterior_typicality.py_func(d2, strength, kernel._logc, kernel._c, kernel._dof, prob, typ)
    got = KernelScores(d2, strength, prob, typ, primary, beyond)
    ref = score_reference(kernel, Z)
    assert_scores_equal(got, ref)
    block = np.empty((4, 70, k))
    _nb.first_pass.py_func(Z, kernel._LT, kernel._fp, kernel._ip, block, primary, beyond)
    np.exp(block[1], out=block[1])
    _nb.second_pass.py_func(block, kernel._fp, kernel._ip)
    assert_scores_equal(KernelScores(*block, primary, beyond), ref)
    out = np.empty((70, k))
    _nb.dist_sq.py_func(Z, kernel._LT, kernel._shift_all, kernel._upper, k, out)
    np.testing.assert_allclose(out, d2, rtol=RTOL)
    nv = rng.uniform(0.0, 2.0, size=Z.shape)
    _nb.noisy_probability.py_func(Z, nv, kernel.centers_, kernel.covariances_, kernel.log_weights_, out)
    np.testing.assert_allclose(out, noisy_probability_reference(kernel, Z, nv), rtol=RTOL, atol=TINY)
    for dof in (1, 2, 5, 6):
        coef = _nb.chi2_coefficients.py_func(dof)
        for x in (0.0, 0.3, 7.0, 1399.0, 1401.0, 1e6, np.inf):
            h = 0.5 * x
            got = _nb.chi2_sf_half.py_func(h, dof, np.exp(-h), coef)
            assert got == pytest.approx(chdtrc(dof, x), rel=RTOL, abs=TINY)
        assert np.isnan(_nb.chi2_sf_half.py_func(np.nan, dof, np.nan, coef))


@pytest.mark.parametrize("k,p", [(3, 2), (5, 6), (4, 7)])
@pytest.mark.parametrize("n", [1, 10_000])
def test_compiled_noisy_probability_equals_reference(k, p, n):
    rng = np.random.default_rng(10 * k + p + n)
    ker = random_kernel(rng, k, p, ordered=False)
    Z = random_players(rng, ker, n)
    nv = rng.uniform(-0.1, 2.0, size=(n, p))  # negative noise counts as none, as in the reference
    nv[: n // 3] = 0.0
    got = ker.noisy_probability(Z, nv)
    np.testing.assert_allclose(got, noisy_probability_reference(ker, Z, nv), rtol=RTOL, atol=TINY)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="noise"):
        ker.noisy_probability(Z, nv[:, :1])


def chi2_grid():
    return np.concatenate([
        [0.0, 5e-324, 1e-300, 1e-100, 1e-20, 1e-10, 1e-5],
        np.logspace(-4, np.log10(3000.0), 4000),
        np.linspace(1380.0, 1500.0, 241),  # across the switch to the log tail, down into denormals
        [1e4, 1e6, 1e12, 1e100, 1e300, np.finfo(float).max, np.inf],
    ])


@pytest.mark.parametrize("dof", list(range(1, 13)) + [17, 40, 101, 200])
def test_chi2_survival_matches_scipy(dof):
    x = chi2_grid()
    ref = chdtrc(dof, x)
    got = chi2_sf(x, dof)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=TINY)
    assert got[0] == 1.0 and got[-1] == 0.0
    assert np.all(np.diff(got[7:4007]) <= 1e-15 * got[7:4006])  # never increases (beyond rounding)
    # NaN and negative input give NaN, like scipy
    assert np.isnan(chi2_sf(np.array([np.nan, -1.0]), dof)).all()


def test_chi2_survival_shapes_and_non_integer_dof():
    x = np.abs(np.random.default_rng(7).normal(size=(4, 5))) * 10
    np.testing.assert_allclose(chi2_sf(x, 6), chdtrc(6, x), rtol=RTOL)
    assert chi2_sf(x, 6).shape == (4, 5)
    np.testing.assert_array_equal(chi2_sf(x, 2.5), chdtrc(2.5, x))  # scipy for non-integer dof
    np.testing.assert_array_equal(chi2_sf(x, 250), chdtrc(250, x))  # and beyond the closed forms


def test_compiled_score_from_threads():
    """The compiled loops release the GIL and share nothing mutable: concurrent calls agree."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    ker = random_kernel(rng, 5, 6, ordered=True)
    Zs = [random_players(rng, ker, 5_000) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(ker.score, Zs))
    for Z, g in zip(Zs, got, strict=True):
        assert_scores_equal(g, score_reference(ker, Z))
