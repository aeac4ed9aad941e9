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


def axis_columns(taxonomy: GameBehavioralTaxonomy, axis: AxisModel) -> np.ndarray:
    """``taxonomy.metric_index(axis.metrics)``, computed once per taxonomy and axis (read-only)."""
    cache = taxonomy.__dict__.setdefault("_axis_columns", {})
    hit = cache.get(id(axis))
    if hit is not None and hit[0] is axis and hit[1] is axis.metrics and hit[2] is taxonomy.scaler.metrics:
        return hit[3]
    cols = taxonomy.metric_index(axis.metrics)
    cols.setflags(write=False)
    cache[id(axis)] = (axis, axis.metrics, taxonomy.scaler.metrics, cols)
    return cols


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


# The formulas of _metric_noise by number (the one-player path dispatches on these, per taxonomy).
(_NOISE_ZERO, _NOISE_SPEND, _NOISE_AVG_PURCHASE, _NOISE_SESSIONS, _NOISE_PURCHASES, _NOISE_AVG_SESSION,
 _NOISE_ACTIVE_SHARE, _NOISE_SESSION_SHARE, _NOISE_START_HOUR, _NOISE_SOCIAL, _NOISE_CUSTOM) = range(11)
_NOISE_CODES = {
    "spend_per_day": _NOISE_SPEND, "avg_purchase_value": _NOISE_AVG_PURCHASE, "has_purchase": _NOISE_ZERO,
    "sessions_per_day": _NOISE_SESSIONS, "purchases_per_day": _NOISE_PURCHASES,
    "avg_session_minutes": _NOISE_AVG_SESSION, "active_day_share": _NOISE_ACTIVE_SHARE,
    "weekend_play_share": _NOISE_SESSION_SHARE, "night_play_share": _NOISE_SESSION_SHARE,
    "social_session_share": _NOISE_SESSION_SHARE, "start_hour_sin": _NOISE_START_HOUR,
    "start_hour_cos": _NOISE_START_HOUR, "social_events_per_session": _NOISE_SOCIAL,
}


def _noise_code(metric: str) -> int:
    code = _NOISE_CODES.get(metric)
    if code is not None:
        return code
    return _NOISE_CUSTOM if metric.endswith("_per_day") else _NOISE_ZERO


def _mx(a: float, b: float) -> float:
    """``np.maximum`` of two floats: NaN wins, and of two equal values the second (``-0.0`` vs ``0.0``)."""
    return a if a > b or a != a else b


def _metric_noise_one(code: int, x: float, sessions: float, purchases: float, avg_value: float, social: float,
                      count: float, e: float, scale: float, typical_value: float) -> float:
    """:func:`_metric_noise` of one player in plain floats, operation for operation (the same bits)."""
    e = _mx(e, 1e-3)
    if code == _NOISE_SPEND:
        avg = _mx(avg_value, typical_value)
        return _mx(_mx(purchases * scale, 0.0), 1.0) * 2.0 * (avg * avg) / (e * e)
    if code == _NOISE_AVG_PURCHASE:
        n_p = _mx(purchases * scale, 0.0)
        return (x * x) / _mx(n_p, 1.0) if n_p > 0 else 0.0
    if code == _NOISE_SESSIONS:
        return _mx(_mx(sessions * scale, 0.0), 1.0) / (e * e)
    if code == _NOISE_PURCHASES:
        return _mx(_mx(purchases * scale, 0.0), 1.0) / (e * e)
    if code == _NOISE_AVG_SESSION:
        return 0.5 * (x * x) / _mx(_mx(sessions * scale, 0.0), 1.0)
    if code == _NOISE_ACTIVE_SHARE:
        return (x * (1 - x) + 0.25 / (e + 1.0)) / (e + 1.0)
    if code == _NOISE_SESSION_SHARE:
        n_s = _mx(sessions * scale, 0.0)
        return (x * (1 - x) + 0.25 / (n_s + 1.0)) / (n_s + 1.0)
    if code == _NOISE_START_HOUR:
        return 0.5 / _mx(_mx(sessions * scale, 0.0), 1.0)
    if code == _NOISE_SOCIAL:
        d = _mx(_mx(sessions * scale, 0.0), 1.0)
        return _mx(social * scale, 1.0) / (d * d)
    if code == _NOISE_CUSTOM:
        return _mx(count * scale, 1.0) / (e * e)
    return 0.0


def _extra_noise_one(taxonomy: GameBehavioralTaxonomy, cols: _Columns, X: np.ndarray, full: float,
                     typical_value: float) -> np.ndarray:
    """:func:`extra_noise` of a one-row frame, in floats (a numpy call per metric costs more than the maths)."""
    plan = _noise_plan(taxonomy)
    e = float(cols("exposure_days")[0])
    scale = full / _mx(e, 1e-3)
    sessions, purchases = float(cols("sessions")[0]), float(cols("purchases")[0])
    avg_value, social = float(cols("avg_purchase_value")[0]), float(cols("social_events")[0])
    xs = X[0].tolist()
    deriv = taxonomy.scaler.derivative(X)[0].tolist()
    out = []
    for j, (code, count_column) in enumerate(plan):
        count = float(cols(count_column)[0]) if count_column else 0.0
        x = xs[j]
        v_now = _metric_noise_one(code, x, sessions, purchases, avg_value, social, count, e, 1.0, typical_value)
        v_full = _metric_noise_one(code, x, sessions, purchases, avg_value, social, count, full, scale,
                                   typical_value)
        d = deriv[j]
        out.append(_mx(v_now - v_full, 0.0) * (d * d))
    return np.array([out])


def _noise_plan(taxonomy: GameBehavioralTaxonomy) -> list[tuple[int, str | None]]:
    """Per metric of the taxonomy: its noise formula and the count column a custom rate needs (cached)."""
    metrics = taxonomy.scaler.metrics
    cached = taxonomy.__dict__.get("_noise_plan")
    if cached is not None and cached[0] is metrics and cached[1] == len(metrics):
        return cached[2]
    plan = []
    for m in metrics:
        code = _noise_code(m)
        plan.append((code, "ev_" + m.removesuffix("_per_day") if code == _NOISE_CUSTOM else None))
    taxonomy.__dict__["_noise_plan"] = (metrics, len(metrics), plan)
    return plan


def extra_noise(taxonomy: GameBehavioralTaxonomy, frame: pl.DataFrame, X: np.ndarray) -> np.ndarray:
    """Sampling-noise variance in model space beyond what a fully exposed player carries.

    Returns
    -------
    ndarray of shape (n, n_metrics)
    """
    cols = _Columns(frame)
    if len(X) == 1:
        return _extra_noise_one(taxonomy, cols, X, float(taxonomy.settings.get("profile_days", 28)),
                                float(taxonomy.calibration_stats.get("median_purchase_value", 1.0)))
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
        cols = axis_columns(taxonomy, axis)
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
    # axis by axis, element-wise: a matrix product's rounding may depend on how many players are scored at once
    confidence = np.zeros(n)
    for a, w in zip(axes, (weights / weights.sum()).tolist(), strict=True):
        confidence = confidence + a.confidence * w
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
    if n == 1:
        return _top_segments_one(axes)
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


def _top_segments_one(axes: list[AxisScores]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_top_segments` of one player, in floats (the same candidates, scores and stable order)."""
    cand = []  # (score, axis, segment) in the candidate order of _top_segments
    for ai, a in enumerate(axes):
        typ = a.scores.typicality[0]
        prim = int(a.scores.primary[0])
        va = max(a.axis.variance_share, 1e-9)
        row = typ.tolist()
        cand.append((2.0 + va * row[prim], ai, prim))  # primaries rank first
        if len(row) > 1:
            masked = typ.copy()
            masked[prim] = -1.0
            second = int(masked.argmax())
            cand.append((va * row[second], ai, second))
    order = sorted(range(len(cand)), key=lambda c: -cand[c][0])[:TOP_K]  # stable, as argsort(kind="stable")
    pad = TOP_K - len(order)
    ta = [cand[c][1] for c in order] + [-1] * pad
    ts = [cand[c][2] for c in order] + [-1] * pad
    tv = [v - 2.0 if v >= 2.0 else v for v in (cand[c][0] for c in order)] + [0.0] * pad
    return (np.array([ta], dtype=np.int64), np.array([ts], dtype=np.int64), np.array([tv], dtype=np.float64))


def _variance_coverage(axes: list[AxisScores], top_axis, top_seg, n: int) -> np.ndarray:
    """Per-player R² of the top-7 description in model space (1 − Σ‖x−x̂‖² / Σ‖x‖²)."""
    if not axes:
        return np.zeros(n)
    if n == 1:
        return _variance_coverage_one(axes, top_axis, top_seg)
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


def _variance_coverage_one(axes: list[AxisScores], top_axis, top_seg) -> np.ndarray:
    """:func:`_variance_coverage` of one player: the same array operations on its row, without the masks."""
    pairs = list(zip(top_axis[0].tolist(), top_seg[0].tolist(), strict=True))
    resid = total = 0.0
    for ai, a in enumerate(axes):
        prob = a.scores.probability
        sel = np.zeros_like(prob)
        sel[0, [s for t, s in pairs if t == ai]] = 1.0
        w = prob * sel
        wsum = w.sum(axis=1, keepdims=True)
        if wsum[0, 0] > 0:
            resid += float(((a.Z - (w / wsum) @ a.axis.kernel.centers_) ** 2).sum(axis=1)[0])
        else:
            resid += float((a.Z ** 2).sum(axis=1)[0])  # x̂ = 0
        total += float((a.Z**2).sum(axis=1)[0])
    return np.array([1.0 - resid / max(total, 1e-12) if total > 1e-12 else 1.0])


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
