"""Compiled loops of the membership kernel (numba, one thread, ``fastmath=False``, GIL released).

``AxisKernel.score`` runs two passes over the players, in blocks of 64 so that the inner loops run
over players and vectorize:

1. :func:`first_pass`: the squared Mahalanobis distances to every segment from the precision Cholesky
   factors (upper triangular, so only the non-zero half is multiplied), ``-d²/2``, and the primary
   (argmax of the weighted log densities, then the beyond-the-extreme rule); the caller turns
   ``-d²/2`` into the strengths with numpy's vectorized ``exp`` (numba's scalar ``exp`` is ~5x slower);
2. :func:`second_pass`: the posterior from the strengths and the chi-square typicality in closed form
   (:func:`chi2_sf_half`).

``core.kernel`` keeps the plain numpy version as the reference these loops are tested against.
Compiled on first use and cached on disk (``cache=True``), so only a machine's first run compiles.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# exp(-h) is a normal float (> 1e-304) below this; above it the chi-square tail is computed in logs
_H_DIRECT = 700.0
# the posterior is formed from the strengths while every weighted strength stays well above denormals
_V_MIN = 1e-290
# the closed forms are used up to this many degrees of freedom (the series has dof / 2 terms)
MAX_DOF = 200


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def chi2_coefficients(dof: int) -> np.ndarray:
    """Coefficients of the closed-form series of :func:`chi2_sf_half`: ``1 / j!`` (even dof) or
    ``1 / Γ(j + 3/2)`` (odd dof), ``j < dof // 2``."""
    m = dof // 2
    coef = np.empty(m)
    g = 1.0 if dof % 2 == 0 else 0.5 * math.sqrt(math.pi)  # Γ(1), Γ(3/2)
    x = 1.0 if dof % 2 == 0 else 1.5
    for j in range(m):
        coef[j] = 1.0 / g
        g *= x + j
    return coef


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def chi2_sf_half(h: float, dof: int, eh: float, coef: np.ndarray) -> float:
    """``1 - F_chi2(dof)(2 h)`` for an integer ``1 <= dof <= MAX_DOF``, given ``eh = exp(-h)`` and
    ``coef = chi2_coefficients(dof)``.

    The upper regularized incomplete gamma ``Q(dof / 2, h)`` in closed form: for even dof,
    ``e^-h Σ_{j<dof/2} h^j / j!``; for odd dof, ``erfc(√h) + e^-h √h Σ_j h^j / Γ(j + 3/2)`` (sums of
    positive terms, by Horner). Far in the tail (h ≥ 700, where ``e^-h`` nears the denormals) the sum
    is taken from its largest term down, scaled by ``exp(-h + (a-1) log h - lgamma(a))``, so nothing
    overflows and the result keeps full precision until it turns denormal itself. NaN or negative
    input gives NaN (as ``scipy.special.chdtrc``).
    """
    if not h > 0.0:
        if h == 0.0:
            return 1.0
        return np.nan
    m = coef.shape[0]
    odd = dof - 2 * m
    if h < _H_DIRECT:
        s = 0.0
        for j in range(m - 1, -1, -1):
            s = s * h + coef[j]
        if odd:
            r = math.sqrt(h)
            return math.erfc(r) + eh * (r * s)
        return eh * s
    if h == np.inf:
        return 0.0
    a = 0.5 * dof
    r = 1.0
    acc = 1.0
    for j in range(1, m):
        r *= (a - j) / h
        acc += r
    out = 0.0
    if m > 0:
        out = math.exp(-h + (a - 1.0) * math.log(h) - math.lgamma(a)) * acc
    if odd:
        out += math.erfc(math.sqrt(h))
    return out


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def chi2_sf(x: np.ndarray, dof: int) -> np.ndarray:
    """Chi-square survival function of each element of a float64 array, integer ``dof``."""
    flat = x.ravel()
    out = np.empty(flat.shape[0])
    coef = chi2_coefficients(dof)
    for i in range(flat.shape[0]):
        h = 0.5 * flat[i]
        out[i] = chi2_sf_half(h, dof, math.exp(-h), coef)
    return out.reshape(x.shape)


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def _dist_block(Z, start, nb, LT, shift, upper, k, zt, y, acc):
    """d² of players ``start .. start+nb`` into ``acc[:k, :nb]``: ``y = z @ L_s - μ_s @ L_s``, ``d² = Σ y²``.

    The block is transposed first (``zt``, dims × players) so that every inner loop runs over players
    and vectorizes; each player's sums are still taken in the same order (over j, then over q).
    """
    p = zt.shape[0]
    zb = Z[start:start + nb]
    for j in range(p):
        for b in range(nb):
            zt[j, b] = zb[b, j]
    for s in range(k):
        for b in range(nb):
            acc[s, b] = 0.0
        for q in range(p):
            col = s * p + q
            jmax = q + 1 if upper else p
            w = LT[col, 0]
            for b in range(nb):
                y[b] = zt[0, b] * w
            for j in range(1, jmax):
                w = LT[col, j]
                for b in range(nb):
                    y[b] += zt[j, b] * w
            sh = shift[col]
            for b in range(nb):
                r = y[b] - sh
                acc[s, b] += r * r


_BLOCK = 64


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def dist_sq(Z, LT, shift, upper, k, out):
    """Squared Mahalanobis distances of every player to every segment into ``out`` (n, k)."""
    n, p = Z.shape
    bs = min(_BLOCK, max(n, 1))
    zt, y, acc = np.empty((p, bs)), np.empty(bs), np.empty((k, bs))
    for start in range(0, n, bs):
        nb = min(bs, n - start)
        _dist_block(Z, start, nb, LT, shift, upper, k, zt, y, acc)
        out_b = out[start:start + nb].ravel()
        for s in range(k):
            for b in range(nb):
                out_b[b * k + s] = acc[s, b]


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def distances_primary(Z, LT, shift, upper, logc, has_order, c_lo, u, norm_sq, lo, hi,
                      d2_out, neg_half_out, primary_out, beyond_out):
    """First pass: d², ``-d²/2`` (the caller exponentiates it with numpy's vectorized ``exp`` into the
    strengths) and the primary: the argmax of the weighted log densities ``logc_s - d²_s / 2``, then
    the beyond-the-extreme rule. Loops run over a block of players so that they vectorize."""
    n, p = Z.shape
    k = logc.shape[0]
    bs = min(_BLOCK, max(n, 1))
    zt, y, acc = np.empty((p, bs)), np.empty(bs), np.empty((k, bs))
    best_lp, t = np.empty(bs), np.empty(bs)
    best = np.empty(bs, dtype=np.int64)
    for start in range(0, n, bs):
        nb = min(bs, n - start)
        _dist_block(Z, start, nb, LT, shift, upper, k, zt, y, acc)
        # views of this block (indices from 0 let the loops vectorize)
        d2_b = d2_out[start:start + nb].ravel()
        nh_b = neg_half_out[start:start + nb].ravel()
        prim_b = primary_out[start:start + nb]
        beyond_b = beyond_out[start:start + nb]
        for b in range(nb):
            best_lp[b] = -np.inf
            best[b] = 0
        for s in range(k):
            ls = logc[s]
            for b in range(nb):
                lp = ls - 0.5 * acc[s, b]
                if lp > best_lp[b]:
                    best_lp[b] = lp
                    best[b] = s
        for s in range(k):
            for b in range(nb):
                d2 = acc[s, b]
                d2_b[b * k + s] = d2
                nh_b[b * k + s] = -0.5 * d2
        if has_order:
            for b in range(nb):
                t[b] = 0.0
            for j in range(p):
                cj, uj = c_lo[j], u[j]
                for b in range(nb):
                    t[b] += (zt[j, b] - cj) * uj
            for b in range(nb):
                tb = t[b] / norm_sq
                seg = hi if tb > 1.0 + 1e-9 else (lo if tb < -1e-9 else -1)
                beyond_b[b] = seg >= 0
                prim_b[b] = seg if seg >= 0 else best[b]
        else:
            for b in range(nb):
                beyond_b[b] = False
                prim_b[b] = best[b]


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def _posterior_row(d2_row, logc, p_row):
    """The reference's posterior of one player, ``exp(lp - max lp) / Σ``."""
    k = logc.shape[0]
    lp_max = -np.inf
    for s in range(k):
        p_row[s] = logc[s] - 0.5 * d2_row[s]
        if p_row[s] > lp_max:
            lp_max = p_row[s]
    total = 0.0
    for s in range(k):
        p_row[s] = math.exp(p_row[s] - lp_max)
        total += p_row[s]
    for s in range(k):
        p_row[s] /= total


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def posterior_typicality(d2_in, strength, logc, c, dof, prob_out, typ_out):
    """Second pass, from d² and the strengths ``e^(-d²/2)``: the posterior and the typicality.

    ``logc`` are the weighted log normalizers ``log w_s + log|L_s| - p/2 log 2π`` and
    ``c = exp(logc - max logc)``. The posterior is ``c_s e^(-d²_s/2) / Σ`` while those products stay
    normal floats; otherwise (a player far from every segment) it is ``exp(lp - max lp) / Σ``, the
    reference's formula. The typicality is :func:`chi2_sf_half`, its series evaluated for a whole block
    at once, and the scalar function for the elements outside ``0 < d²/2 < 700``.
    """
    n, k = d2_in.shape
    coef = chi2_coefficients(dof)
    m = coef.shape[0]
    odd = dof % 2 == 1
    f, e, pr, ty = d2_in.ravel(), strength.ravel(), prob_out.ravel(), typ_out.ravel()
    bs = _BLOCK
    tot = np.empty(bs)
    for start in range(0, n, bs):
        nb = min(bs, n - start)
        fb, eb = f[start * k:(start + nb) * k], e[start * k:(start + nb) * k]
        pb, tb = pr[start * k:(start + nb) * k], ty[start * k:(start + nb) * k]
        nel = nb * k
        # typicality
        cm = coef[m - 1] if m > 0 else 0.0
        for x in range(nel):
            tb[x] = cm
        for j in range(m - 2, -1, -1):
            cj = coef[j]
            for x in range(nel):
                tb[x] = tb[x] * (0.5 * fb[x]) + cj
        if odd:
            for x in range(nel):
                r = math.sqrt(0.5 * fb[x])
                tb[x] = math.erfc(r) + eb[x] * (r * tb[x])
        else:
            for x in range(nel):
                tb[x] *= eb[x]
        n_out = 0
        for x in range(nel):
            h = 0.5 * fb[x]
            n_out += not ((h > 0.0) & (h < _H_DIRECT))
        if n_out:
            for x in range(nel):
                h = 0.5 * fb[x]
                if not ((h > 0.0) & (h < _H_DIRECT)):
                    tb[x] = chi2_sf_half(h, dof, eb[x], coef)
        # posterior
        for b in range(nb):
            tot[b] = 0.0
        n_low = 0
        for s in range(k):
            cs = c[s]
            for b in range(nb):
                v = cs * eb[b * k + s]
                pb[b * k + s] = v
                tot[b] += v
                n_low += not v >= _V_MIN
        for b in range(nb):
            tot[b] = 1.0 / tot[b]
        for s in range(k):
            for b in range(nb):
                pb[b * k + s] *= tot[b]
        if n_low:
            for b in range(nb):
                low = False
                for s in range(k):
                    low |= not c[s] * eb[b * k + s] >= _V_MIN
                if low:
                    _posterior_row(fb[b * k:(b + 1) * k], logc, pb[b * k:(b + 1) * k])


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def _unpack(fp, ip):
    k, p = ip[0], ip[1]
    o = k * p
    shift, logc, c = fp[:o], fp[o:o + k], fp[o + k:o + 2 * k]
    c_lo, u, norm_sq = fp[o + 2 * k:o + 2 * k + p], fp[o + 2 * k + p:o + 2 * k + 2 * p], fp[o + 2 * k + 2 * p]
    return shift, logc, c, c_lo, u, norm_sq, ip[2] != 0, ip[3] != 0, ip[4], ip[5], ip[6]


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def first_pass(Z, LT, fp, ip, out, primary_out, beyond_out):
    """:func:`distances_primary` with the axis constants packed (``AxisKernel._fp``, ``._ip``): d² into
    ``out[0]``, ``-d²/2`` into ``out[1]``. Few arguments, because each costs the one-player call."""
    shift, logc, c, c_lo, u, norm_sq, upper, has_order, lo, hi, dof = _unpack(fp, ip)
    distances_primary(Z, LT, shift, upper, logc, has_order, c_lo, u, norm_sq, lo, hi,
                      out[0], out[1], primary_out, beyond_out)


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def second_pass(out, fp, ip):
    """:func:`posterior_typicality` from ``out[0]`` (d²) and ``out[1]`` (strengths) into ``out[2]``
    (posterior) and ``out[3]`` (typicality)."""
    shift, logc, c, c_lo, u, norm_sq, upper, has_order, lo, hi, dof = _unpack(fp, ip)
    posterior_typicality(out[0], out[1], logc, c, dof, out[2], out[3])


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def noisy_probability(Z, noise_var, centers, covariances, log_weights, out):
    """Posterior with each player's diagonal sampling noise added to every segment covariance.

    Per player and segment: Cholesky of ``Σ_s + diag(max(noise, 0))``, a forward solve of the
    offset, and ``log det`` from the factor's diagonal, as the numpy reference does per chunk.
    """
    n, p = Z.shape
    k = centers.shape[0]
    log_2pi = math.log(2.0 * math.pi)
    a = np.empty((p, p))
    y = np.empty(p)
    lp = np.empty(k)
    for i in range(n):
        lp_max = -np.inf
        for s in range(k):
            for r in range(p):
                for q in range(r + 1):
                    a[r, q] = covariances[s, r, q]
                nv = noise_var[i, r]
                a[r, r] += nv if nv > 0.0 else (nv if nv != nv else 0.0)
            # in-place Cholesky (lower) of a, and the forward solve of y = a^-1 (z - μ)
            det_sqrt = 1.0
            quad = 0.0
            for r in range(p):
                for q in range(r):
                    acc = a[r, q]
                    for j in range(q):
                        acc -= a[r, j] * a[q, j]
                    a[r, q] = acc / a[q, q]
                acc = a[r, r]
                for j in range(r):
                    acc -= a[r, j] * a[r, j]
                d = math.sqrt(acc)
                a[r, r] = d
                det_sqrt *= d
                yy = Z[i, r] - centers[s, r]
                for j in range(r):
                    yy -= a[r, j] * y[j]
                yy /= d
                y[r] = yy
                quad += yy * yy
            if 1e-290 < det_sqrt < 1e290:  # one log of the product of the factor's diagonal
                log_det = math.log(det_sqrt)
            else:  # or the sum of their logs if the product would leave the normal floats
                log_det = 0.0
                for r in range(p):
                    log_det += math.log(a[r, r])
            lp[s] = log_weights[s] - 0.5 * (2.0 * log_det + quad + p * log_2pi)
            if lp[s] > lp_max:
                lp_max = lp[s]
        total = 0.0
        for s in range(k):
            lp[s] = math.exp(lp[s] - lp_max)
            total += lp[s]
        for s in range(k):
            out[i, s] = lp[s] / total
