"""The membership kernel: one code path for one player and for a million.

Each axis is compiled once into the Cholesky factors of its segments' precision matrices
(as scikit-learn's ``GaussianMixture`` does). Scoring runs one compiled pass per player
(``_kernel_numba``: distances, strengths, posterior, chi-square typicality, primary, extremes, with no
intermediate array); the plain numpy version it replaced is kept below (``score_reference``,
``noisy_probability_reference``) as the reference the compiled loops are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.special import chdtrc
from threadpoolctl import ThreadpoolController

_THREADS = ThreadpoolController()
_CHUNK = 8192

_LOG_2PI = np.log(2.0 * np.pi)

_NB = None  # the compiled loops, imported on first use
_WARM = False  # whether this process has loaded them (the first AxisKernel does)


def _compiled():
    """The compiled loops (``_kernel_numba``). Importing numba takes ~0.5 s, so code that never scores
    (ingestion, most CLI commands) does not pay it."""
    global _NB
    if _NB is None:
        from . import _kernel_numba

        _NB = _kernel_numba
    return _NB


def precision_cholesky(covariances: np.ndarray) -> np.ndarray:
    """Cholesky factors of the precision matrices.

    Parameters
    ----------
    covariances : ndarray of shape (n_segments, p, p)

    Returns
    -------
    ndarray of shape (n_segments, p, p)
        ``L`` with ``L @ L.T = inv(cov)``; ``y = (x - mu) @ L`` gives ``d² = Σ y²``.
    """
    covariances = np.asarray(covariances, dtype=np.float64)
    k, p, _ = covariances.shape
    out = np.empty_like(covariances)
    for s in range(k):
        try:
            cov_chol = linalg.cholesky(covariances[s], lower=True)
        except linalg.LinAlgError as exc:
            raise ValueError(
                f"covariance of segment {s} is not positive definite; add a ridge (λI) before compiling"
            ) from exc
        out[s] = linalg.solve_triangular(cov_chol, np.eye(p), lower=True).T
    return out


@dataclass
class KernelScores:
    """Scores of n players on one axis with k segments (all arrays float64)."""

    dist_sq: np.ndarray  # (n, k) squared Mahalanobis distances
    strength: np.ndarray  # (n, k) exp(-0.5 d²)
    probability: np.ndarray  # (n, k) Gaussian posterior with segment shares, rows sum to 1
    typicality: np.ndarray  # (n, k) 1 - F_chi2(p)(d²)
    primary: np.ndarray  # (n,) int index of the primary segment
    beyond_extreme: np.ndarray  # (n,) bool


def chi2_sf(x, dof) -> np.ndarray:
    """Chi-square survival function ``1 - F_chi2(dof)(x)``, elementwise, float64.

    Closed forms for integer ``1 <= dof <= 200`` (compiled); ``scipy.special.chdtrc`` otherwise.
    """
    x = np.asarray(x, dtype=np.float64)
    nb = _compiled()
    if float(dof) == int(dof) and 1 <= int(dof) <= nb.MAX_DOF:
        return nb.chi2_sf(np.ascontiguousarray(x), int(dof))
    return chdtrc(float(dof), x)


class AxisKernel:
    """Compiled Gaussian scoring for one axis.

    Parameters
    ----------
    centers : ndarray of shape (k, p)
        Segment centers in model space.
    covariances : ndarray of shape (k, p, p)
        Positive-definite segment covariances in model space.
    weights : ndarray of shape (k,)
        Segment shares (sum to 1).
    order : sequence of int, optional
        For an ordered axis, segment indices from the lowest to the highest; a player projecting
        beyond the outermost center is that extreme segment's member.
    """

    def __init__(self, centers, covariances, weights, *, order=None) -> None:
        self.centers_ = np.ascontiguousarray(centers, dtype=np.float64)
        self.covariances_ = np.ascontiguousarray(covariances, dtype=np.float64)
        w = np.clip(np.asarray(weights, dtype=np.float64), 1e-12, None)
        self.log_weights_ = np.log(w / w.sum())
        self.prec_chol_ = precision_cholesky(self.covariances_)
        self.log_det_prec_ = np.array(
            [np.sum(np.log(np.diag(self.prec_chol_[s]))) for s in range(len(self.centers_))]
        )
        # y = Z @ L - mu @ L: precompute the shift per segment, and all factors side by side
        self.shift_ = np.einsum("kp,kpq->kq", self.centers_, self.prec_chol_)
        k, p = self.centers_.shape
        self._L_all = np.ascontiguousarray(np.concatenate(list(self.prec_chol_), axis=1))  # (p, k*p)
        self._shift_all = self.shift_.ravel()
        self.order_ = None if order is None else np.asarray(order, dtype=np.int64)
        self.n_segments, self.n_dims = self.centers_.shape
        # compiled-path constants: factors transposed (one contiguous row per output column), whether
        # they are upper triangular (they are, from precision_cholesky), weighted log normalizers
        self._LT = np.ascontiguousarray(self._L_all.T)
        self._upper = bool(np.all(np.tril(self._L_all.reshape(p, k, p).transpose(1, 0, 2), -1) == 0))
        self._logc = self.log_weights_ + self.log_det_prec_ - 0.5 * p * _LOG_2PI
        self._c = np.exp(self._logc - self._logc.max())
        self._dof = int(p)
        self._has_order = False
        c_lo, u, norm_sq = np.zeros(p), np.zeros(p), 1.0
        self._lo = self._hi = -1
        if self.order_ is not None and len(self.order_) >= 2:
            lo, hi = int(self.order_[0]), int(self.order_[-1])
            u_ = self.centers_[hi] - self.centers_[lo]
            if float(u_ @ u_) > 0:
                self._has_order, self._lo, self._hi = True, lo, hi
                c_lo, u, norm_sq = self.centers_[lo], u_, float(u_ @ u_)
        # the same constants packed into one float and one int array (each argument costs the
        # one-player call ~0.15 µs); the attributes above are views into them
        self._fp = np.concatenate([self._shift_all, self._logc, self._c, c_lo, u, [norm_sq]])
        self._ip = np.array([k, p, self._upper, self._has_order, self._lo, self._hi, self._dof], dtype=np.int64)
        o = k * p
        self._logc, self._c = self._fp[o:o + k], self._fp[o + k:o + 2 * k]
        self._c_lo, self._u = self._fp[o + 2 * k:o + 2 * k + p], self._fp[o + 2 * k + p:o + 2 * k + 2 * p]
        self._norm_sq = norm_sq
        global _WARM
        if not _WARM:
            # load the compiled entry points of the request path now (from numba's disk cache: ~0.3 s,
            # or compiled on a machine's first run), where a kernel is built, not in a first request
            _WARM = True
            self.score(self.centers_[:1])
            self.noisy_probability(self.centers_[:1], np.zeros((1, p)))
            from . import _window_numba  # the request path's window features

            _window_numba.warm_up()

    def _positions(self, Z) -> np.ndarray:
        Z = np.ascontiguousarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_dims:
            raise ValueError(f"expected positions of shape (n, {self.n_dims}), got {Z.shape}")
        return Z

    def dist_sq(self, Z: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances, ndarray of shape (n_players, n_segments)."""
        Z = self._positions(Z)
        out = np.empty((Z.shape[0], self.n_segments))
        _compiled().dist_sq(Z, self._LT, self._shift_all, self._upper, self.n_segments, out)
        return out

    def log_prob(self, dist_sq: np.ndarray) -> np.ndarray:
        """Weighted log densities, shape (n, k)."""
        return self.log_weights_ + self.log_det_prec_ - 0.5 * (dist_sq + self.n_dims * _LOG_2PI)

    def beyond(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ordered axes: (index of extreme segment or -1, mask) for players beyond an outer center."""
        n = Z.shape[0]
        seg = np.full(n, -1, dtype=np.int64)
        if self.order_ is None or len(self.order_) < 2:
            return seg, np.zeros(n, dtype=bool)
        lo, hi = self.order_[0], self.order_[-1]
        u = self.centers_[hi] - self.centers_[lo]
        norm_sq = float(u @ u)
        if norm_sq <= 0:
            return seg, np.zeros(n, dtype=bool)
        t = (Z - self.centers_[lo]) @ u / norm_sq
        seg[t > 1.0 + 1e-9] = hi
        seg[t < -1e-9] = lo
        return seg, seg >= 0

    def score_light(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Only ``(dist_sq, strength, primary)`` of :meth:`score` (no posterior or typicality arrays).

        ``primary`` is the same as ``score(Z).primary`` (the posterior argmax, then the
        beyond-the-extreme rule); it is taken on the log densities, so it can differ only where two
        segments' posteriors tie to the last bit.
        """
        out, primary, _ = self._first_pass(self._positions(Z), 2)
        return out[0], out[1], primary

    def primary(self, Z: np.ndarray) -> np.ndarray:
        """``score(Z).primary`` without the outputs it does not need (the compiled first pass computes it)."""
        Z = self._positions(Z)
        if not 1 <= self._dof <= _compiled().MAX_DOF:
            return score_reference(self, Z).primary
        return self._first_pass(Z, 2)[1]

    def _first_pass(self, Z: np.ndarray, planes: int):
        """d² into ``out[0]`` and the strengths into ``out[1]`` of a fresh ``(planes, n, k)`` block."""
        n = Z.shape[0]
        out = np.empty((planes, n, self.n_segments))
        primary, beyond = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.bool_)
        _compiled().first_pass(Z, self._LT, self._fp, self._ip, out, primary, beyond)
        np.exp(out[1], out=out[1])  # numpy's vectorized exp, as the reference
        return out, primary, beyond

    def score(self, Z: np.ndarray) -> KernelScores:
        """Score players.

        Parameters
        ----------
        Z : ndarray of shape (n_players, p)
            Positions in model space.
        """
        Z = self._positions(Z)
        nb = _compiled()
        if not 1 <= self._dof <= nb.MAX_DOF:
            return score_reference(self, Z)
        out, primary, beyond = self._first_pass(Z, 4)
        nb.second_pass(out, self._fp, self._ip)
        return KernelScores(dist_sq=out[0], strength=out[1], probability=out[2], typicality=out[3],
                            primary=primary, beyond_extreme=beyond)

    def noisy_probability(self, Z: np.ndarray, noise_var: np.ndarray, chunk: int = 200_000) -> np.ndarray:
        """Posterior probabilities with each player's sampling noise added to every segment covariance.

        Parameters
        ----------
        Z : ndarray of shape (n, p)
        noise_var : ndarray of shape (n, p)
            Diagonal sampling-noise variance of each player's position in model space.
        chunk : int
            Unused (the compiled loop needs no chunking); kept for the numpy reference's signature.

        Returns
        -------
        ndarray of shape (n, k)
        """
        Z = self._positions(Z)
        nv = np.ascontiguousarray(noise_var, dtype=np.float64)
        if nv.shape != Z.shape:
            raise ValueError(f"expected noise variances of shape {Z.shape}, got {nv.shape}")
        out = np.empty((Z.shape[0], self.n_segments))
        _compiled().noisy_probability(Z, nv, self.centers_, self.covariances_, self.log_weights_, out)
        return out


def dist_sq_reference(kernel: AxisKernel, Z: np.ndarray) -> np.ndarray:
    """The numpy reference of :meth:`AxisKernel.dist_sq`: one product with all segments' factors side by
    side, in cache-sized chunks, on one BLAS thread."""
    n = Z.shape[0]
    k, p = kernel.n_segments, kernel.n_dims
    out = np.empty((n, k))
    with _THREADS.limit(limits=1):
        for start in range(0, n, _CHUNK):
            y = Z[start:start + _CHUNK] @ kernel._L_all
            y -= kernel._shift_all
            y *= y
            out[start:start + _CHUNK] = y.reshape(len(y), k, p).sum(axis=2)
    return out


def score_reference(kernel: AxisKernel, Z: np.ndarray) -> KernelScores:
    """The numpy reference of :meth:`AxisKernel.score` (scipy's ``chdtrc`` for the typicality)."""
    Z = kernel._positions(Z)
    d2 = dist_sq_reference(kernel, Z)
    prob = kernel.log_prob(d2)
    prob -= prob.max(axis=1, keepdims=True)
    np.exp(prob, out=prob)
    prob /= prob.sum(axis=1, keepdims=True)
    primary = prob.argmax(axis=1)
    seg, beyond = kernel.beyond(Z)
    primary = np.where(beyond, seg, primary)
    return KernelScores(
        dist_sq=d2,
        strength=np.exp(-0.5 * d2),
        probability=prob,
        typicality=chdtrc(kernel.n_dims, d2),
        primary=primary,
        beyond_extreme=beyond & (seg == primary),
    )


def noisy_probability_reference(kernel: AxisKernel, Z: np.ndarray, noise_var: np.ndarray,
                                chunk: int = 200_000) -> np.ndarray:
    """The numpy reference of :meth:`AxisKernel.noisy_probability` (batched LAPACK Cholesky per chunk)."""
    n, p = Z.shape
    out = np.empty((n, kernel.n_segments))
    eye = np.eye(p)
    for start in range(0, n, chunk):
        z = Z[start : start + chunk]
        nv = np.maximum(noise_var[start : start + chunk], 0.0)
        lp = np.empty((len(z), kernel.n_segments))
        for s in range(kernel.n_segments):
            cov = kernel.covariances_[s][None, :, :] + nv[:, :, None] * eye
            chol = np.linalg.cholesky(cov)
            diff = (z - kernel.centers_[s])[:, :, None]
            y = np.linalg.solve(chol, diff)[:, :, 0]
            log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
            lp[:, s] = kernel.log_weights_[s] - 0.5 * (log_det + (y * y).sum(axis=1) + p * _LOG_2PI)
        lp -= lp.max(axis=1, keepdims=True)
        np.exp(lp, out=lp)
        out[start : start + len(z)] = lp / lp.sum(axis=1, keepdims=True)
    return out
