"""Anomaly statistics: how surprising is a player's current window given their own baseline.

Scoring is separate from deciding: ``axis_surprise`` returns scores (higher = more anomalous);
thresholds are set from a null run (one window back) by ``null_thresholds``; ``decide`` turns
surprise into flags. Counts use a negative-binomial tail around the shrunk baseline rate;
continuous metrics an empirical tail (with a fitted exponential extension) of ``current - expected``
among calibration players of the same segment and data volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Per universal axis: count signals (name of the window total) and continuous signals (metric names).
COUNT_SIGNALS: dict[str, list[str]] = {
    "monetization": ["purchases"],
    "engagement": ["sessions"],
    "temporal": [],
    "social": ["social_events"],
}
CONTINUOUS_SIGNALS: dict[str, list[str]] = {
    "monetization": ["spend_per_day", "avg_purchase_value"],
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


def fit_dispersion(count, mu) -> float:
    """Method-of-moments negative-binomial overdispersion ``α`` (Var = μ + αμ²), clipped to [0, 1e4].

    Large values are real: a segment of non-payers where a few convert has a tiny mean and a heavy tail.
    """
    count = np.asarray(count, float)
    mu = np.asarray(mu, float)
    denom = float(np.sum(mu**2))
    if denom <= 0:
        return 0.0
    alpha = float(np.sum((count - mu) ** 2 - count) / denom)
    return float(np.clip(alpha, 0.0, 1e4))


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
    p = np.empty_like(mu)
    pois = alpha < 1e-6
    if pois.any():
        lo = stats.poisson.cdf(count[pois], mu[pois])
        hi = stats.poisson.sf(count[pois] - 1, mu[pois])
        p[pois] = np.minimum(1.0, 2.0 * np.minimum(lo, hi))
    nb = ~pois
    if nb.any():
        size = 1.0 / alpha[nb]
        prob = size / (size + mu[nb])
        lo = stats.nbinom.cdf(count[nb], size, prob)
        hi = stats.nbinom.sf(count[nb] - 1, size, prob)
        p[nb] = np.minimum(1.0, 2.0 * np.minimum(lo, hi))
    return np.maximum(p, P_FLOOR), np.sign(count - mu)


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


def tail_p_value(diff: np.ndarray, tail: TailModel) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided P(|Z| >= |z|) under the fitted null; and the sign of the move."""
    diff = np.asarray(diff, float)
    z = np.abs(diff - tail.median) / tail.scale
    qs = np.asarray(tail.quantiles)
    probs = np.linspace(0.0, TAIL_START, N_QUANTILES)
    inside = z <= qs[-1]
    p = np.empty_like(z)
    # P(|Z| >= z) = 1 - F(z), F interpolated on the quantile grid (ties resolved by the highest prob)
    p[inside] = 1.0 - np.interp(z[inside], qs, probs)
    p[~inside] = (1.0 - TAIL_START) * np.exp(-tail.tail_rate * (z[~inside] - qs[-1]))
    return np.clip(p, P_FLOOR, 1.0), np.sign(diff - tail.median)


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
def combine(p_values: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bonferroni over an axis's M metrics.

    Parameters
    ----------
    p_values, signs : ndarray of shape (n, M)

    Returns
    -------
    surprise : (n,) ``-log10(M · min p)`` clipped at 0
    p_axis : (n,) ``min(1, M · min p)``
    which : (n,) index of the most surprising metric
    sign : (n,) its sign
    """
    n, m = p_values.shape
    if m == 0:
        z = np.zeros(n)
        return z, np.ones(n), np.zeros(n, dtype=np.int64), z
    which = p_values.argmin(axis=1)
    pmin = p_values[np.arange(n), which]
    p_axis = np.minimum(1.0, m * pmin)
    surprise = np.maximum(0.0, -np.log10(np.maximum(m * pmin, P_FLOOR)))
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
        while lv * n >= 10:
            levels.append(lv)
            lv /= 2.0
        values = [float(np.quantile(s, 1.0 - v)) for v in levels]
        values = list(np.maximum.accumulate(values))
        top = s[s >= values[-1]]
        excess = float(np.mean(top - values[-1])) if len(top) > 1 else 0.0
        # survival decays by a factor e per mean excess: log10 slope = log10(e) / mean excess
        rate = float(np.log10(np.e) / max(excess, 1e-3))
        return cls(values=[float(v) for v in values], levels=levels, tail_rate=rate)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, float)
        vals = np.asarray(self.values)
        logl = np.log10(np.asarray(self.levels))
        out = np.empty_like(s)
        inside = s <= vals[-1]
        # survival at s: interpolate log10 level on the (non-decreasing) value grid
        uniq_vals, idx = np.unique(vals, return_index=True)
        last_idx = np.array([np.flatnonzero(vals == v)[-1] for v in uniq_vals])
        out[inside] = -np.interp(s[inside], uniq_vals, logl[last_idx]) if len(uniq_vals) > 1 else 0.0
        out[~inside] = -(logl[-1] - self.tail_rate * (s[~inside] - vals[-1]))
        return np.maximum(out, 0.0)
