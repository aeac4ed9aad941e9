"""The one-value helpers of the request path equal numpy's array functions bit for bit."""

from __future__ import annotations

import numpy as np

from unified_segmentation.core.anomaly import interp_one, sign


def _same(a: float, b: float) -> bool:
    return (a == b and np.signbit(a) == np.signbit(b)) or (a != a and b != b)


def test_interp_one_equals_numpy_interp_on_ties_knots_and_ends():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(2, 45))
        xp = np.sort(np.round(rng.normal(size=n) * 3, int(rng.integers(0, 3))))  # rounding makes ties
        if rng.random() < 0.2:
            xp[:] = xp[0]
        fp = np.sort(rng.normal(size=n)) if rng.random() < 0.5 else rng.normal(size=n)
        if rng.random() < 0.1:
            fp[int(rng.integers(0, n))] = np.inf
        inside = xp[0] + (xp[-1] - xp[0]) * rng.random(5)
        xs = [*xp.tolist(), xp[0] - 1, xp[-1] + 1, np.nan, -0.0, 0.0, *inside.tolist()]
        many = np.interp(np.array(xs * 3, dtype=float), xp, fp)  # long input: numpy precomputes the slopes
        for i, x in enumerate(xs):
            one = interp_one(float(x), xp.tolist(), fp.tolist())
            assert _same(float(np.interp(float(x), xp, fp)), one), (x, xp, fp)
            assert _same(float(many[i]), one)


def test_sign_equals_numpy_sign():
    for x in (-0.0, 0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 5e-324, -5e-324):
        assert _same(float(np.sign(np.array([x]))[0]), sign(x))
