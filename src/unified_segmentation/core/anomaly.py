"""Anomaly statistics: how surprising is a player's current window given their own baseline.

Scoring is separate from deciding: ``axis_surprise`` returns scores (higher = more anomalous);
thresholds are set from a null run (one window back) by ``null_thresholds``; ``decide`` turns
surprise into flags. Counts use a negative-binomial tail around the shrunk baseline rate (for sparse
counts such as purchases, the shrinkage is a per-segment empirical-Bayes gamma prior and the tail is its
posterior predictive); amounts per event (spend per purchase) a standardized log difference from the
player's shrunk level given both windows' counts, so count and amount together test total spend;
continuous metrics an empirical tail (with a fitted exponential extension) of ``current - expected``
among calibration players of the same segment and data volume. An axis's evidence is Bonferroni over
the metrics that had data for the player.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from scipy import special

# Per universal axis: count signals (name of the window total) and continuous signals (metric names).
COUNT_SIGNALS: dict[str, list[str]] = {
    "monetization": ["purchases"],
    "engagement": ["sessions"],
    "temporal": [],
    "social": ["social_events"],
}
# Count signals whose baseline rate gets an empirical-Bayes prior fitted per segment (``fit_rate_prior``):
# sparse counts (a minnow buys about three times in 28 days) whose own history is too noisy to stand
# alone. Dense counts (sessions, social events) keep the fixed ``n0`` shrinkage: on the planted game a
# fitted prior did not help them and, for social events, pulled players of mixed segments toward a
# center they do not share (more null extremes, fewer bursts flagged).
RATE_PRIOR_SIGNALS: frozenset[str] = frozenset({"purchases"})
# Per universal axis: amount signals (metric, window total, window count): the amount per event given
# the count (count and amount together are the total), see ``fit_amount_model``.
AMOUNT_SIGNALS: dict[str, list[tuple[str, str, str]]] = {
    "monetization": [("avg_purchase_value", "net_spend", "purchases")],
}
CONTINUOUS_SIGNALS: dict[str, list[str]] = {
    "monetization": [],
    "engagement": ["avg_session_minutes", "active_day_share"],
    "temporal": ["weekend_play_share", "night_play_share", "start_hour_sin", "start_hour_cos"],
    "social": ["social_session_share"],
}
# the data volume behind each continuous metric (a window total), for the volume bins
VOLUME_BASIS = {
    "spend_per_day": "purchases",
    "avg_purchase_value": "purchases",
    "avg_session_minutes": "sessions",
    "active_day_share": "sessions",
    "weekend_play_share": "sessions",
    "night_play_share": "sessions",
    "start_hour_sin": "sessions",
    "start_hour_cos": "sessions",
    "social_session_share": "sessions",
}
DIRECTIONS = {
    "monetization": ("spend_spike", "spend_drop"),
    "engagement": ("engagement_spike", "engagement_drop"),
    "social": ("social_burst", "social_drop"),
}
P_FLOOR = 1e-300
# SurpriseCalibrator tail: a top spread below MIN_TAIL_EXCESS carries no information; the decay of
# log10 survival per unit of raw surprise beyond the grid is kept within [MIN_TAIL_RATE, MAX_TAIL_RATE]
# (a model p-value is never trusted to be more than this many times too conservative, or too liberal)
MIN_TAIL_EXCESS = 0.05
GRID_MIN_POINTS = 3  # the calibrator's grid goes down to survival levels with this many null points
TAIL_POINTS = 10  # top points behind its exponential extension
MIN_TAIL_RATE = 0.1
MAX_TAIL_RATE = 3.0
N_QUANTILES = 41
TAIL_START = 0.9


def direction_name(axis_id: str, metric: str, sign: float) -> str:
    """Fixed vocabulary: spend_spike|spend_drop, engagement_*, schedule_shift, social_*, <axis>_*."""
    if axis_id == "temporal":
        return "schedule_shift"
    up, down = DIRECTIONS.get(axis_id, (f"{axis_id}_spike", f"{axis_id}_drop"))
    return up if sign >= 0 else down


# ---------------------------------------------------------------------------- counts
def shrunk_rate(count_typ, e_typ, rate_seg, n0: float) -> np.ndarray:
    """``r̂ = (e_typ·r_typ + n0·r_seg)/(e_typ + n0)`` with ``e_typ·r_typ = count_typ``."""
    return (np.asarray(count_typ, float) + n0 * np.asarray(rate_seg, float)) / (np.asarray(e_typ, float) + n0)


def fit_dispersion(count, mu, known_alpha=0.0) -> float:
    """Method-of-moments negative-binomial overdispersion ``α`` (Var = μ + (a + α)μ²), clipped to [0, 1e4].

    ``known_alpha`` (scalar or per row, ``a``) is the part of the overdispersion already accounted for
    (the uncertainty of each player's baseline rate); ``α`` is what remains. Large values are real: a
    segment of non-payers where a few convert has a tiny mean and a heavy tail.
    """
    count = np.asarray(count, float)
    mu = np.asarray(mu, float)
    denom = float(np.sum(mu**2))
    if denom <= 0:
        return 0.0
    alpha = float(np.sum((count - mu) ** 2 - count - np.asarray(known_alpha, float) * mu**2) / denom)
    return float(np.clip(alpha, 0.0, 1e4))


def fit_rate_prior(count_typ, expo_typ, count_cur, expo_cur, rate: float | None = None
                   ) -> tuple[float, float]:
    """Empirical-Bayes strength of a segment's gamma prior on player rates and the residual dispersion.

    Player rates ``λ_i ~ Gamma(a0 = b0·m, b0)`` around the segment rate ``m``; given a typical-window
    count ``x_i`` over exposure ``e_i`` the next window's count over exposure ``e'_i`` is negative
    binomial with mean ``μ_i = (a0 + x_i)/(b0 + e_i)·e'_i`` (the shrunk baseline) and dispersion
    ``1/(a0 + x_i)`` (the uncertainty of that baseline), plus a residual dispersion ``α`` (bursts within
    a player). ``(b0, α)`` maximize that predictive likelihood of one window given the one before (a fit
    run; ``b0`` first with no residual dispersion, then ``α`` given it): the shrinkage is whatever
    predicts out of window best — a homogeneous segment gets a strong prior, a heterogeneous one a weak
    prior, and players sorted into the segment by their typical window (whose within-segment spread
    understates the spread of their rates) do not bias it. ``rate`` (default: the typical windows'
    pooled rate) is the segment rate ``m``.

    Returns
    -------
    (b0, alpha) : the pseudo-exposure (0 when the segment has no events) and the residual dispersion
    """
    x = np.asarray(count_typ, float)
    e = np.asarray(expo_typ, float)
    y = np.rint(np.asarray(count_cur, float))
    ec = np.asarray(expo_cur, float)
    keep = (e > 0) & (ec > 0)
    x, e, y, ec = x[keep], e[keep], y[keep], ec[keep]
    if len(x) < 2 or x.sum() + y.sum() <= 0:
        return 0.0, 0.0
    m = float(rate) if rate is not None and rate > 0 else float((x.sum() + 0.5) / e.sum())
    b_grid = np.geomspace(0.25, 1e4, 33)
    lgy = special.gammaln(y + 1)

    def loglik(b0: float, alpha: float) -> float:
        """Predictive log-likelihood of the current counts (one grid point at a time: memory O(n))."""
        size = b0 * m + x
        mu = size / (b0 + e) * ec
        r = 1.0 / (1.0 / size + alpha)
        return float(np.sum(special.gammaln(r + y) - special.gammaln(r) - lgy + r * np.log(r / (r + mu))
                            + y * np.log(np.maximum(mu, 1e-300) / (r + mu))))

    # the prior first (what a pure gamma-Poisson explains), then the residual dispersion given it
    b0 = float(b_grid[int(np.argmax([loglik(b, 0.0) for b in b_grid]))])
    a_grid = np.concatenate([[0.0], np.geomspace(1e-3, 1e2, 21)])
    alpha = float(a_grid[int(np.argmax([loglik(b0, a) for a in a_grid]))])
    return b0, alpha


def count_p_value(count, mu, alpha) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided tail probability of ``count`` under NB(mean μ, dispersion α); and the sign of the move.

    Returns
    -------
    p : ndarray of shape (n,)
    sign : ndarray of shape (n,), +1 above the mean, -1 below
    """
    count = np.rint(np.asarray(count, float))
    mu = np.maximum(np.asarray(mu, float), 1e-9)
    alpha = np.broadcast_to(np.asarray(alpha, float), mu.shape)
    if mu.shape == (1,) and count.shape == (1,):  # one player (a request): no masks
        p1 = _count_p_one(float(count[0]), float(mu[0]), float(alpha[0]))
        return np.maximum(np.array([p1]), P_FLOOR), np.sign(count - mu)
    p = np.empty_like(mu)
    # the regularized incomplete gamma / beta functions directly (what scipy.stats evaluates, without
    # its per-call distribution machinery: a single detect call makes a few dozen of these)
    k = np.maximum(count, 0.0)
    some = k >= 1
    pois = alpha < 1e-6
    if pois.any():
        kp, mp = k[pois], mu[pois]
        lo = special.gammaincc(kp + 1.0, mp)  # P(X <= k)
        hi = np.where(some[pois], special.gammainc(np.maximum(kp, 1.0), mp), 1.0)  # P(X >= k)
        p[pois] = np.minimum(1.0, 2.0 * np.minimum(lo, hi))
    nb = ~pois
    if nb.any():
        size = 1.0 / alpha[nb]
        prob = size / (size + mu[nb])
        kn = k[nb]
        lo = special.betainc(size, kn + 1.0, prob)  # P(X <= k)
        hi = np.where(some[nb], special.betainc(np.maximum(kn, 1.0), size, 1.0 - prob), 1.0)  # P(X >= k)
        p[nb] = np.minimum(1.0, 2.0 * np.minimum(lo, hi))
    return np.maximum(p, P_FLOOR), np.sign(count - mu)


def _mx(a: float, b: float) -> float:
    """``np.maximum`` of two floats: NaN wins, and of two equal values the second (``-0.0`` vs ``0.0``)."""
    return a if a > b or a != a else b


def _mn(a: float, b: float) -> float:
    """``np.minimum`` of two floats: NaN wins, and of two equal values the second."""
    return a if a < b or a != a else b


def _count_p_one(count: float, mu: float, alpha: float) -> float:
    """The p-value of :func:`count_p_value` for one player, before its floor: the same special functions on
    the same values, chosen by ``if`` instead of masks."""
    k = _mx(count, 0.0)
    some = k >= 1
    if alpha < 1e-6:
        lo = float(special.gammaincc(k + 1.0, mu))
        hi = float(special.gammainc(_mx(k, 1.0), mu)) if some else 1.0
    else:
        size = 1.0 / alpha
        prob = size / (size + mu)
        lo = float(special.betainc(size, k + 1.0, prob))
        hi = float(special.betainc(_mx(k, 1.0), size, 1.0 - prob)) if some else 1.0
    return _mn(1.0, 2.0 * _mn(lo, hi))


# ---------------------------------------------------------------------------- amounts
@dataclass
class AmountModel:
    """Log amount per event of a segment: players' levels ``ℓ_i ~ N(level, s2/k0)``, the log mean amount
    of ``n`` events around ``ℓ_i`` with variance ``s2/n``; ``tail`` is the null tail of the standardized
    difference (fitted on the same run)."""

    level: float
    s2: float
    k0: float
    tail: TailModel | None = None

    def to_dict(self) -> dict:
        return {"level": self.level, "s2": self.s2, "k0": self.k0,
                "tail": self.tail.to_dict() if self.tail else None}

    @classmethod
    def from_dict(cls, d: dict) -> AmountModel:
        tail = d.get("tail")
        return cls(level=d["level"], s2=d["s2"], k0=d["k0"], tail=TailModel.from_dict(tail) if tail else None)


def log_amounts(total, count) -> tuple[np.ndarray, np.ndarray]:
    """(log mean amount per event, number of events behind it); 0 events where there is no amount."""
    total = np.asarray(total, float)
    count = np.asarray(count, float)
    ok = (count > 0) & (total > 0)
    out = np.zeros_like(total)
    out[ok] = np.log(total[ok] / count[ok])
    return out, np.where(ok, count, 0.0)


def amount_z(log_cur, n_cur, log_typ, n_typ, level, s2, k0, shift=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Standardized move of the log amount per event, and the player's shrunk log level.

    ``ℓ̂ = (n_typ·log_typ + k0·level)/(n_typ + k0)``;
    ``z = (log_cur − ℓ̂ − shift) / sqrt(s2·(1/n_cur + 1/(n_typ + k0)))`` (0 where ``n_cur`` is 0).
    """
    n_cur = np.asarray(n_cur, float)
    n_typ = np.asarray(n_typ, float)
    k0 = np.asarray(k0, float)
    ell = (n_typ * np.asarray(log_typ, float) + k0 * np.asarray(level, float)) / np.maximum(n_typ + k0, 1e-12)
    var = np.asarray(s2, float) * (1.0 / np.maximum(n_cur, 1.0) + 1.0 / np.maximum(n_typ + k0, 1e-12))
    z = np.where(n_cur > 0, (np.asarray(log_cur, float) - ell - shift) / np.sqrt(np.maximum(var, 1e-12)), 0.0)
    return z, ell


def fit_amount_model(log_cur, n_cur, log_typ, n_typ) -> AmountModel | None:
    """Fit level, ``s2`` and the shrinkage ``k0`` of a segment's log amounts on a fit run.

    ``level`` is the event-weighted mean log amount of the typical windows; for each ``k0`` on a grid
    ``s2`` has its closed-form maximum-likelihood value and ``k0`` maximizes the Gaussian predictive
    likelihood of the current log amount given the typical one (out of window, as for count priors).
    The tail of the resulting ``z`` is then fitted empirically. None with fewer than 20 players who
    have an amount in the current window.
    """
    n_cur = np.asarray(n_cur, float)
    n_typ = np.asarray(n_typ, float)
    log_cur = np.asarray(log_cur, float)
    log_typ = np.asarray(log_typ, float)
    use = n_cur > 0
    if use.sum() < 20:
        return None
    w = n_typ[n_typ > 0]
    level = float(np.sum(w * log_typ[n_typ > 0]) / w.sum()) if w.sum() > 0 else float(np.median(log_cur[use]))
    yc, nc, yt, nt = log_cur[use], n_cur[use], log_typ[use], n_typ[use]
    best = None
    for k0 in np.geomspace(0.1, 1e3, 41):
        ell = (nt * yt + k0 * level) / (nt + k0)
        v = 1.0 / nc + 1.0 / (nt + k0)
        d = yc - ell
        s2 = float(np.mean(d**2 / v))
        if s2 <= 0:
            continue
        ll = -0.5 * float(np.sum(np.log(s2 * v)))
        if best is None or ll > best[0]:
            best = (ll, float(k0), s2)
    if best is None:
        return None
    _, k0, s2 = best
    z, _ = amount_z(yc, nc, yt, nt, level, s2, k0)
    return AmountModel(level=level, s2=s2, k0=k0, tail=fit_tail(z))


# ---------------------------------------------------------------------------- continuous
@dataclass
class TailModel:
    """Empirical distribution of |diff - median| / scale with an exponential tail beyond its 90th pct."""

    median: float
    scale: float
    quantiles: list[float]  # |z| at probabilities linspace(0, TAIL_START, N_QUANTILES)
    tail_rate: float  # exponential decay of P(|Z| > z) beyond quantiles[-1]
    n: int

    def to_dict(self) -> dict:
        return {"median": self.median, "scale": self.scale, "quantiles": self.quantiles,
                "tail_rate": self.tail_rate, "n": self.n}

    def quantile_array(self) -> np.ndarray:
        """``quantiles`` as a read-only float array, converted once per model."""
        qs = self.__dict__.get("_quantile_array")
        if qs is None:
            qs = np.asarray(self.quantiles, dtype=float)
            qs.setflags(write=False)
            self.__dict__["_quantile_array"] = qs
        return qs

    def quantile_list(self) -> list[float]:
        """``quantiles`` as floats, converted once per model."""
        qs = self.__dict__.get("_quantile_list")
        if qs is None:
            qs = self.__dict__["_quantile_list"] = self.quantile_array().tolist()
        return qs

    @classmethod
    def from_dict(cls, d: dict) -> TailModel:
        return cls(**d)


def fit_tail(diffs: np.ndarray) -> TailModel | None:
    """Fit a TailModel on null-run differences; None when fewer than 20 finite values."""
    d = np.asarray(diffs, float)
    d = d[np.isfinite(d)]
    if len(d) < 20:
        return None
    med = float(np.median(d))
    z = np.abs(d - med)
    scale = float(np.median(z) * 1.4826)
    if scale <= 1e-12:
        scale = float(np.std(d))
    if scale <= 1e-12:
        return None
    z = z / scale
    qs = np.quantile(z, np.linspace(0.0, TAIL_START, N_QUANTILES))
    top = z[z > qs[-1]] - qs[-1]
    mean_excess = float(np.mean(top)) if len(top) else 1.0
    rate = 1.0 / max(mean_excess, 1e-6)
    return TailModel(median=med, scale=scale, quantiles=[float(q) for q in qs], tail_rate=rate, n=len(d))


_TAIL_PROBS = np.linspace(0.0, TAIL_START, N_QUANTILES)
_TAIL_PROBS.setflags(write=False)


def tail_p_value(diff: np.ndarray, tail: TailModel) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided P(|Z| >= |z|) under the fitted null; and the sign of the move."""
    diff = np.asarray(diff, float)
    qs = tail.quantile_array()
    probs = _TAIL_PROBS
    if diff.shape == (1,):  # one player (a request): no masks
        p1, sign1 = tail_p_one(float(diff[0]), tail)
        return np.array([p1]), np.array([sign1])
    z = np.abs(diff - tail.median) / tail.scale
    inside = z <= qs[-1]
    p = np.empty_like(z)
    # P(|Z| >= z) = 1 - F(z), F interpolated on the quantile grid (ties resolved by the highest prob)
    p[inside] = 1.0 - np.interp(z[inside], qs, probs)
    p[~inside] = (1.0 - TAIL_START) * np.exp(-tail.tail_rate * (z[~inside] - qs[-1]))
    return np.clip(p, P_FLOOR, 1.0), np.sign(diff - tail.median)


def interp_one(x: float, xp: list[float], fp: list[float]) -> float:
    """``np.interp(x, xp, fp)`` of one float (``xp`` increasing, ties allowed), in floats: numpy's own
    steps (the interval ``xp[j] <= x < xp[j + 1]``, the value at a knot or at the last point as is, the
    slope form, and its fallbacks when that gives NaN)."""
    if x != x:
        return x
    n = len(xp)
    if x > xp[-1]:
        return fp[-1]
    j = bisect.bisect_right(xp, x) - 1
    if j < 0:
        return fp[0]
    if j == n - 1 or xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    out = slope * (x - xp[j]) + fp[j]
    if out != out:
        out = slope * (x - xp[j + 1]) + fp[j + 1]
        if out != out and fp[j] == fp[j + 1]:
            out = fp[j]
    return out


_TAIL_PROBS_LIST = np.linspace(0.0, TAIL_START, N_QUANTILES).tolist()


def tail_p_one(diff: float, tail: TailModel) -> tuple[float, float]:
    """:func:`tail_p_value` of one value, in floats (the same operations, chosen by ``if``)."""
    qs = tail.quantile_list()
    z1 = abs(diff - tail.median) / tail.scale
    last = qs[-1]
    if z1 <= last:
        p1 = 1.0 - interp_one(z1, qs, _TAIL_PROBS_LIST)
    else:
        p1 = (1.0 - TAIL_START) * float(np.exp(-tail.tail_rate * (z1 - last)))
    return _mn(_mx(p1, P_FLOOR), 1.0), sign(diff - tail.median)


def sign(x: float) -> float:
    """``np.sign`` of one float: 1, -1, 0 (``+0.0`` for both zeros) or NaN."""
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0 if x == 0 else x


def count_p_one(count: float, mu: float, alpha: float) -> tuple[float, float]:
    """:func:`count_p_value` of one player, in floats: ``(p, sign)``."""
    count = float(np.rint(count))
    mu = _mx(mu, 1e-9)
    return _mx(_count_p_one(count, mu, alpha), P_FLOOR), sign(count - mu)


def volume_bins(basis: np.ndarray, edges: list[float]) -> np.ndarray:
    """Index of the data-volume bin for each player (edges are inner boundaries)."""
    return np.searchsorted(np.asarray(edges, float), np.asarray(basis, float), side="right")


def volume_edges(basis: np.ndarray, n_bins: int = 3) -> list[float]:
    b = np.asarray(basis, float)
    if len(b) < 60 or n_bins < 2:
        return []
    edges = np.unique(np.quantile(b, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return [float(e) for e in edges]


# ---------------------------------------------------------------------------- combining
def combine(p_values: np.ndarray, signs: np.ndarray, tested: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bonferroni over the metrics of an axis that were tested for each player.

    Parameters
    ----------
    p_values, signs : ndarray of shape (n, M)
    tested : bool ndarray of shape (n, M), optional
        Which metrics had data for the player (a player with no sessions has no session length); the
        multiplicity is the number tested (at least 1). Default: all M.

    Returns
    -------
    surprise : (n,) ``-log10(M_i · min p)`` clipped at 0
    p_axis : (n,) ``min(1, M_i · min p)``
    which : (n,) index of the most surprising metric
    sign : (n,) its sign
    """
    n, m = p_values.shape
    if m == 0:
        z = np.zeros(n)
        return z, np.ones(n), np.zeros(n, dtype=np.int64), z
    mult = np.full(n, float(m)) if tested is None else np.maximum(np.asarray(tested, bool).sum(axis=1), 1)
    which = p_values.argmin(axis=1)
    pmin = p_values[np.arange(n), which]
    p_axis = np.minimum(1.0, mult * pmin)
    surprise = np.maximum(0.0, -np.log10(np.maximum(mult * pmin, P_FLOOR)))
    return surprise, p_axis, which, signs[np.arange(n), which]


def null_thresholds(null_surprise: dict[str, np.ndarray], alarm_rate: float, cut: float = 0.7) -> dict[str, float]:
    """Per-axis thresholds so that the null-run share with ``surprise/threshold > cut`` is the axis's part
    of the alarm budget (``alarm_rate`` split evenly over the axes given)."""
    if not null_surprise:
        return {}
    part = alarm_rate / len(null_surprise)
    out = {}
    for axis, s in null_surprise.items():
        s = np.asarray(s, float)
        if len(s) == 0:
            out[axis] = 1.0
            continue
        q = float(np.quantile(s, 1.0 - part, method="higher"))
        out[axis] = max(q, 0.5) / cut
    return out


def anomaly_scores(surprise: np.ndarray, threshold: float) -> np.ndarray:
    """``min(1, surprise / threshold)``."""
    return np.minimum(1.0, np.asarray(surprise, float) / max(threshold, 1e-9))


def mahalanobis_rows(diff: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    """‖diff_i‖ under per-row precision factors.

    Parameters
    ----------
    diff : ndarray of shape (n, p)
    prec_chol : ndarray of shape (n, p, p)
    """
    y = np.einsum("np,npq->nq", diff, prec_chol)
    return np.sqrt(np.einsum("nq,nq->n", y, y))


# ---------------------------------------------------------------------------- empirical null of surprise
@dataclass
class SurpriseCalibrator:
    """Maps a raw surprise to ``-log10 P_null(S >= s)`` using a null sample of the same segment.

    Model-based p-values are never exact (heterogeneity, rare conversions); recalibrating each segment's
    statistic on a null run makes one threshold mean the same false-alarm share in every segment.
    Beyond the largest levels the survival is extended with an exponential tail fitted on the top points.
    """

    values: list[float]  # raw surprise at the survival levels below
    levels: list[float]  # decreasing survival probabilities
    tail_rate: float  # decay of log10 survival per unit of surprise beyond values[-1]

    def to_dict(self) -> dict:
        return {"values": self.values, "levels": self.levels, "tail_rate": self.tail_rate}

    @classmethod
    def from_dict(cls, d: dict) -> SurpriseCalibrator:
        return cls(**d)

    @classmethod
    def fit(cls, surprise: np.ndarray, min_n: int = 50) -> SurpriseCalibrator | None:
        s = np.sort(np.asarray(surprise, float))
        n = len(s)
        if n < min_n:
            return None
        levels = [1.0]
        lv = 0.5
        while lv * n >= GRID_MIN_POINTS:
            levels.append(lv)
            lv /= 2.0
        values = [float(np.quantile(s, 1.0 - v)) for v in levels]
        values = list(np.maximum.accumulate(values))
        # exponential tail from the top TAIL_POINTS points: their mean excess over the next one
        k = min(TAIL_POINTS, n - 1)
        excess = float(np.mean(s[-k:] - s[-k - 1]))
        # survival decays by a factor e per mean excess: log10 slope = log10(e) / mean excess; with no
        # spread up there (ties, e.g. a segment whose null is almost all zeros, or a share stuck at 1)
        # there is nothing to extrapolate from, and a unit of raw surprise counts as a decade
        rate = 1.0 if excess < MIN_TAIL_EXCESS else float(np.log10(np.e) / excess)
        rate = float(np.clip(rate, MIN_TAIL_RATE, MAX_TAIL_RATE))
        return cls(values=[float(v) for v in values], levels=levels, tail_rate=rate)

    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(values, log10 levels, distinct values, log10 level at the last of each)``, built once."""
        grid = self.__dict__.get("_grid_arrays")
        if grid is None:
            vals = np.asarray(self.values)
            logl = np.log10(np.asarray(self.levels))
            uniq_vals = np.unique(vals)
            last_idx = np.array([np.flatnonzero(vals == v)[-1] for v in uniq_vals])
            grid = (vals, logl, uniq_vals, logl[last_idx])
            for a in grid:
                a.setflags(write=False)
            self.__dict__["_grid_arrays"] = grid
        return grid

    def __call__(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, float)
        vals, logl, uniq_vals, uniq_logl = self._grid()
        if s.shape == (1,):  # one player: the same operations without masks
            return np.array([self.one(float(s[0]))])
        out = np.empty_like(s)
        inside = s <= vals[-1]
        # survival at s: interpolate log10 level on the (non-decreasing) value grid
        out[inside] = -np.interp(s[inside], uniq_vals, uniq_logl) if len(uniq_vals) > 1 else 0.0
        out[~inside] = -(logl[-1] - self.tail_rate * (s[~inside] - vals[-1]))
        return np.maximum(out, 0.0)

    def one(self, v: float) -> float:
        """The calibrated surprise of one raw value, in floats (what ``self(np.array([v]))[0]`` gives)."""
        lists = self.__dict__.get("_grid_lists")
        if lists is None:
            vals, logl, uniq_vals, uniq_logl = self._grid()
            lists = self.__dict__["_grid_lists"] = (float(vals[-1]), float(logl[-1]), uniq_vals.tolist(),
                                                    uniq_logl.tolist())
        last, last_logl, uniq_vals, uniq_logl = lists
        if v <= last:
            out1 = -interp_one(v, uniq_vals, uniq_logl) if len(uniq_vals) > 1 else 0.0
        else:
            out1 = -(last_logl - self.tail_rate * (v - last))
        return _mx(out1, 0.0)
