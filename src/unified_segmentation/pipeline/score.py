"""Categorization: features -> positions -> per-axis memberships, confidence, top-7, coverage.

Everything is arrays over all players at once; the same code scores one player or a million.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..core.kernel import KernelScores
from ..core.taxonomy import AxisModel, GameBehavioralTaxonomy
from .data import column, matrix

TOP_K = 7
MAX_PER_AXIS = 2


def positions(taxonomy: GameBehavioralTaxonomy, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Metric-unit matrix X and model-space Z of shape (n, n_metrics) in ``taxonomy.scaler.metrics`` order."""
    X = matrix(frame, taxonomy.scaler.metrics)
    return X, taxonomy.scaler.transform(X) if len(X) else np.zeros_like(X)


def _col(frame: pl.DataFrame, name: str) -> np.ndarray:
    return column(frame, name)


class _Columns:
    """Columns of a features frame as float64 arrays, converted once (nulls as 0)."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = _col(self.frame, name)
        return self._cache[name]


def _metric_noise(metric: str, x: np.ndarray, f: _Columns, e: np.ndarray, scale: float | np.ndarray,
                  typical_value: float) -> np.ndarray:
    """Sampling variance (metric units) of a window estimate with exposure ``e`` and counts × ``scale``."""
    n_s = np.maximum(f("sessions") * scale, 0.0)
    n_p = np.maximum(f("purchases") * scale, 0.0)
    e = np.maximum(e, 1e-3)
    one = np.ones_like(x)
    if metric == "spend_per_day":
        avg = np.maximum(f("avg_purchase_value"), typical_value)
        return np.maximum(n_p, 1.0) * 2.0 * avg**2 / e**2
    if metric == "avg_purchase_value":
        return np.where(n_p > 0, x**2 / np.maximum(n_p, 1.0), 0.0)
    if metric == "has_purchase":
        return 0.0 * one
    if metric == "sessions_per_day":
        return np.maximum(n_s, 1.0) / e**2
    if metric == "purchases_per_day":
        return np.maximum(n_p, 1.0) / e**2
    if metric == "avg_session_minutes":
        return 0.5 * x**2 / np.maximum(n_s, 1.0)
    if metric == "active_day_share":
        return (x * (1 - x) + 0.25 / (e + 1.0)) / (e + 1.0)
    if metric in ("weekend_play_share", "night_play_share", "social_session_share"):
        return (x * (1 - x) + 0.25 / (n_s + 1.0)) / (n_s + 1.0)
    if metric in ("start_hour_sin", "start_hour_cos"):
        return 0.5 / np.maximum(n_s, 1.0)
    if metric == "social_events_per_session":
        n_soc = f("social_events") * scale
        return np.maximum(n_soc, 1.0) / np.maximum(n_s, 1.0) ** 2
    if metric.endswith("_per_day"):
        count = f("ev_" + metric.removesuffix("_per_day")) * scale
        return np.maximum(count, 1.0) / e**2
    return 0.0 * one


def extra_noise(taxonomy: GameBehavioralTaxonomy, frame: pl.DataFrame, X: np.ndarray) -> np.ndarray:
    """Sampling-noise variance in model space beyond what a fully exposed player carries.

    Returns
    -------
    ndarray of shape (n, n_metrics)
    """
    cols = _Columns(frame)
    e = cols("exposure_days")
    full = float(taxonomy.settings.get("profile_days", 28))
    scale = full / np.maximum(e, 1e-3)
    typical_value = float(taxonomy.calibration_stats.get("median_purchase_value", 1.0))
    deriv = taxonomy.scaler.derivative(X)
    out = np.zeros_like(X)
    for j, m in enumerate(taxonomy.scaler.metrics):
        v_now = _metric_noise(m, X[:, j], cols, e, 1.0, typical_value)
        v_full = _metric_noise(m, X[:, j], cols, np.full_like(e, full), scale, typical_value)
        out[:, j] = np.maximum(v_now - v_full, 0.0) * deriv[:, j] ** 2
    return out


@dataclass
class AxisScores:
    axis: AxisModel
    cols: np.ndarray  # metric columns of this axis in the taxonomy's metric order
    Z: np.ndarray  # (n, p)
    scores: KernelScores
    confidence: np.ndarray  # (n,)


@dataclass
class ProfileScores:
    """All categorization outputs for n players (arrays aligned on ``player_ids``)."""

    player_ids: list[str]
    X: np.ndarray
    Z: np.ndarray
    axes: list[AxisScores]
    confidence: np.ndarray  # (n,)
    top_axis: np.ndarray  # (n, TOP_K) index into ``axes`` or -1
    top_segment: np.ndarray  # (n, TOP_K) segment index or -1
    top_score: np.ndarray  # (n, TOP_K)
    variance_coverage: np.ndarray  # (n,)
    inactive: np.ndarray  # (n,) bool
    exposure_days: np.ndarray  # (n,)

    def axis_scores(self, axis_id: str) -> AxisScores:
        for a in self.axes:
            if a.axis.axis_id == axis_id:
                return a
        raise KeyError(axis_id)


def score_players(taxonomy: GameBehavioralTaxonomy, frame: pl.DataFrame, *, with_confidence: bool = True
                  ) -> ProfileScores:
    """Score every row of a profile-window features frame against the taxonomy."""
    X, Z = positions(taxonomy, frame)
    n = len(X)
    noise = extra_noise(taxonomy, frame, X) if with_confidence and n else None
    axes: list[AxisScores] = []
    for axis in taxonomy.active_axes:
        cols = taxonomy.metric_index(axis.metrics)
        Za = np.ascontiguousarray(Z[:, cols])
        ks = axis.kernel.score(Za)
        if noise is not None:
            prob_noisy = axis.kernel.noisy_probability(Za, noise[:, cols])
            conf = prob_noisy[np.arange(n), ks.primary]
        else:
            conf = ks.probability[np.arange(n), ks.primary]
        axes.append(AxisScores(axis=axis, cols=cols, Z=Za, scores=ks, confidence=conf))
    weights = np.array([a.axis.variance_share for a in axes]) if axes else np.zeros(0)
    if axes and weights.sum() <= 0:
        weights = np.ones(len(axes))
    confidence = (
        np.stack([a.confidence for a in axes], axis=1) @ (weights / weights.sum()) if axes else np.zeros(n)
    )
    top_axis, top_seg, top_score = _top_segments(axes, n)
    coverage = _variance_coverage(axes, top_axis, top_seg, n)
    inactive = _col(frame, "active_days") <= 0
    return ProfileScores(
        player_ids=frame["player_id"].to_list(), X=X, Z=Z, axes=axes, confidence=confidence,
        top_axis=top_axis, top_segment=top_seg, top_score=top_score, variance_coverage=coverage,
        inactive=inactive, exposure_days=_col(frame, "exposure_days"),
    )


def _top_segments(axes: list[AxisScores], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(axis, segment) pairs ranked by v_a × typicality, at most 2 per axis, primaries first."""
    if not axes:
        neg = -np.ones((n, TOP_K), dtype=np.int64)
        return neg, neg.copy(), np.zeros((n, TOP_K))
    cand_axis, cand_seg, cand_score = [], [], []
    rows = np.arange(n)
    for ai, a in enumerate(axes):
        typ = a.scores.typicality
        prim = a.scores.primary
        va = max(a.axis.variance_share, 1e-9)
        cand_axis.append(np.full(n, ai))
        cand_seg.append(prim)
        cand_score.append(2.0 + va * typ[rows, prim])  # primaries rank first
        if typ.shape[1] > 1:
            masked = typ.copy()
            masked[rows, prim] = -1.0
            second = masked.argmax(axis=1)
            cand_axis.append(np.full(n, ai))
            cand_seg.append(second)
            cand_score.append(va * typ[rows, second])
    A = np.stack(cand_axis, axis=1)
    S = np.stack(cand_seg, axis=1)
    V = np.stack(cand_score, axis=1)
    order = np.argsort(-V, axis=1, kind="stable")[:, :TOP_K]
    take = lambda M: np.take_along_axis(M, order, axis=1)  # noqa: E731
    ta, ts, tv = take(A), take(S), take(V)
    tv = np.where(tv >= 2.0, tv - 2.0, tv)
    if ta.shape[1] < TOP_K:
        pad = TOP_K - ta.shape[1]
        ta = np.pad(ta, ((0, 0), (0, pad)), constant_values=-1)
        ts = np.pad(ts, ((0, 0), (0, pad)), constant_values=-1)
        tv = np.pad(tv, ((0, 0), (0, pad)))
    return ta, ts, tv


def _variance_coverage(axes: list[AxisScores], top_axis, top_seg, n: int) -> np.ndarray:
    """Per-player R² of the top-7 description in model space (1 − Σ‖x−x̂‖² / Σ‖x‖²)."""
    if not axes:
        return np.zeros(n)
    resid = np.zeros(n)
    total = np.zeros(n)
    for ai, a in enumerate(axes):
        centers = a.axis.kernel.centers_
        prob = a.scores.probability
        sel = np.zeros_like(prob)
        rr, jj = np.nonzero(top_axis == ai)
        sel[rr, top_seg[rr, jj]] = 1.0
        w = prob * sel
        wsum = w.sum(axis=1, keepdims=True)
        xhat = np.where(wsum > 0, (w / np.where(wsum > 0, wsum, 1.0)) @ centers, 0.0)
        resid += ((a.Z - xhat) ** 2).sum(axis=1)
        total += (a.Z**2).sum(axis=1)
    return np.where(total > 1e-12, 1.0 - resid / np.maximum(total, 1e-12), 1.0)


def profiles_frame(taxonomy: GameBehavioralTaxonomy, ps: ProfileScores) -> pl.DataFrame:
    """Long frame: one row per player × axis × segment (degenerate axes: their single ``<axis>_none``)."""
    parts = []
    n = len(ps.player_ids)
    pid = np.asarray(ps.player_ids, dtype=object)
    for a in ps.axes:
        k = a.axis.kernel.n_segments
        ks = a.scores
        seg_ids = np.array([s.segment_id for s in a.axis.segments])
        seg_names = np.array([s.segment_name for s in a.axis.segments], dtype=object)
        is_primary = np.zeros((n, k), dtype=bool)
        is_primary[np.arange(n), ks.primary] = True
        parts.append(pl.DataFrame({
            "player_id": np.repeat(pid, k),
            "axis": a.axis.axis_id,
            "segment_id": np.tile(seg_ids, n),
            "segment_name": np.tile(seg_names, n),
            "membership_strength": ks.strength.ravel(),
            "membership_probability": ks.probability.ravel(),
            "typicality": ks.typicality.ravel(),
            "distance_from_center": np.sqrt(ks.dist_sq).ravel(),
            "is_primary": is_primary.ravel(),
            "beyond_extreme": (is_primary & ks.beyond_extreme[:, None]).ravel(),
            "confidence": np.repeat(a.confidence, k),
            "inactive": np.repeat(ps.inactive, k),
        }, strict=False))
    for axis in taxonomy.axes:
        if axis.degenerate and n:
            seg = axis.segments[0]
            parts.append(pl.DataFrame({
                "player_id": pid, "axis": axis.axis_id, "segment_id": seg.segment_id,
                "segment_name": seg.segment_name, "membership_strength": 1.0, "membership_probability": 1.0,
                "typicality": 1.0, "distance_from_center": 0.0, "is_primary": True, "beyond_extreme": False,
                "confidence": 0.0, "inactive": ps.inactive,
            }, strict=False))
    if not parts:
        return pl.DataFrame()
    return pl.concat(parts, how="vertical_relaxed")


def primary_offsets(taxonomy: GameBehavioralTaxonomy, ps: ProfileScores, axis: AxisScores
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of each player from their primary segment's center: (model space, metric units), (n, p)."""
    centers = axis.axis.kernel.centers_[axis.scores.primary]
    off_model = axis.Z - centers
    centers_metric = np.stack([s.center_metric for s in axis.axis.segments])[axis.scores.primary]
    off_metric = ps.X[:, axis.cols] - centers_metric
    return off_model, off_metric
