"""Comparing a legacy profile with a unified one (DESIGN §4.5).

``similarity = 0.5·primary agreement + 0.3·share of baseline metrics within 5 % + 0.2·anomaly-flag agreement``,
renormalized over the parts both profiles have. Legacy segment names are first matched to unified names per
axis by Hungarian matching on the sample's contingency table (the legacy's "whale" may be the unified
"whale_2").
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .profile import CompatProfile

WEIGHTS = {"primary": 0.5, "baseline": 0.3, "anomalies": 0.2}
EQUIVALENT_ABOVE = 0.90
MINOR_FROM = 0.70
REL_TOL = 0.05
ABS_TOL = 1e-6

NameMap = dict[str, dict[str, str]]


def match_segment_names(legacy_names: Sequence[str], unified_names: Sequence[str]) -> dict[str, str]:
    """One axis: ``{legacy_name: unified_name}`` maximizing co-assigned players (Hungarian matching).

    ``legacy_names[i]`` and ``unified_names[i]`` are the two systems' primary segments of player ``i``.
    The matching is one-to-one; a legacy name left without a partner (more legacy names than unified, or
    no co-occurrence) is not in the map. Deterministic (names are sorted before matching).
    """
    if len(legacy_names) != len(unified_names):
        raise ValueError("legacy_names and unified_names must be paired (same length)")
    if not legacy_names:
        return {}
    ln = sorted(set(legacy_names))
    un = sorted(set(unified_names))
    li = {n: i for i, n in enumerate(ln)}
    ui = {n: i for i, n in enumerate(un)}
    table = np.zeros((len(ln), len(un)), dtype=np.int64)
    for a, b in zip(legacy_names, unified_names, strict=True):
        table[li[a], ui[b]] += 1
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {ln[r]: un[c] for r, c in zip(rows, cols, strict=True) if table[r, c] > 0}


def match_names_by_axis(pairs: Iterable[tuple[CompatProfile, CompatProfile]]) -> NameMap:
    """``{axis: {legacy_name: unified_name}}`` over a sample of (legacy, unified) profile pairs."""
    per_axis: dict[str, tuple[list[str], list[str]]] = {}
    for leg, uni in pairs:
        for axis, name in leg.primary_segments.items():
            other = uni.primary_segments.get(axis)
            if other is None:
                continue
            ls, us = per_axis.setdefault(axis, ([], []))
            ls.append(name)
            us.append(other)
    return {axis: match_segment_names(ls, us) for axis, (ls, us) in sorted(per_axis.items())}


def values_close(a: float, b: float, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """Within ``rel_tol`` of the larger magnitude, with an absolute floor ``abs_tol`` (for zeros)."""
    return abs(a - b) <= max(rel_tol * max(abs(a), abs(b)), abs_tol)


@dataclass
class Comparison:
    """The parts of a similarity and what differs (``None`` = part absent from one side)."""

    primary: float | None = None
    baseline: float | None = None
    anomalies: float | None = None
    primary_diff: dict[str, dict[str, str]] = field(default_factory=dict)
    baseline_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    anomaly_diff: dict[str, dict[str, bool]] = field(default_factory=dict)

    @property
    def similarity(self) -> float:
        parts = [(WEIGHTS[k], v) for k, v in (("primary", self.primary), ("baseline", self.baseline),
                                               ("anomalies", self.anomalies)) if v is not None]
        total = sum(w for w, _ in parts)
        return float(sum(w * v for w, v in parts) / total) if total else 0.0

    @property
    def differing_parts(self) -> list[str]:
        return [k for k, d in (("primary", self.primary_diff), ("baseline", self.baseline_diff),
                               ("anomalies", self.anomaly_diff)) if d]


def compare(a: CompatProfile, b: CompatProfile, name_map: NameMap | None = None, *,
            rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> Comparison:
    """Part-by-part comparison of ``a`` (legacy side, whose names ``name_map`` translates) with ``b``."""
    name_map = name_map or {}
    out = Comparison()
    axes = [ax for ax in a.primary_segments if ax in b.primary_segments]
    if axes:
        agree = 0
        for ax in axes:
            mapped = name_map.get(ax, {}).get(a.primary_segments[ax], a.primary_segments[ax])
            if mapped == b.primary_segments[ax]:
                agree += 1
            else:
                out.primary_diff[ax] = {"legacy": a.primary_segments[ax], "mapped": mapped,
                                        "unified": b.primary_segments[ax]}
        out.primary = agree / len(axes)
    metrics = [m for m in a.behavioral_baseline if m in b.behavioral_baseline]
    if metrics:
        close = 0
        for m in metrics:
            x, y = a.behavioral_baseline[m], b.behavioral_baseline[m]
            if values_close(x, y, rel_tol, abs_tol):
                close += 1
            else:
                out.baseline_diff[m] = {"legacy": x, "unified": y}
        out.baseline = close / len(metrics)
    if a.anomalies is not None and b.anomalies is not None:
        common = [ax for ax in a.anomalies.axes if ax in b.anomalies.axes]
        if common:
            same = 0
            for ax in common:
                if a.anomalies.axes[ax] == b.anomalies.axes[ax]:
                    same += 1
                else:
                    out.anomaly_diff[ax] = {"legacy": a.anomalies.axes[ax], "unified": b.anomalies.axes[ax]}
            out.anomalies = same / len(common)
        else:
            same_overall = a.anomalies.is_anomalous == b.anomalies.is_anomalous
            out.anomalies = 1.0 if same_overall else 0.0
            if not same_overall:
                out.anomaly_diff["overall"] = {"legacy": a.anomalies.is_anomalous,
                                               "unified": b.anomalies.is_anomalous}
    return out


def similarity(a: CompatProfile, b: CompatProfile, name_map: NameMap | None = None, *,
               rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> float:
    """0.5·primary agreement + 0.3·baseline closeness + 0.2·anomaly-flag agreement (renormalized; 0 if
    nothing is comparable). Primary agreement is the share of common axes whose (mapped) primary agrees;
    baseline closeness the share of common metrics within ``rel_tol`` (floor ``abs_tol``); anomaly
    agreement the share of common axes with equal flags (the overall flag when no axis is common)."""
    return compare(a, b, name_map, rel_tol=rel_tol, abs_tol=abs_tol).similarity


def classify(sim: float) -> str:
    """``equivalent`` (> 0.90) | ``minor`` (0.70–0.90) | ``significant`` (< 0.70)."""
    if sim > EQUIVALENT_ABOVE:
        return "equivalent"
    if sim >= MINOR_FROM:
        return "minor"
    return "significant"


def cohens_kappa(a_flags: Sequence[Hashable], b_flags: Sequence[Hashable]) -> float:
    """Cohen's κ of two raters' labels (booleans or any labels); 1.0 when both are constant and equal."""
    a = list(a_flags)
    b = list(b_flags)
    if len(a) != len(b):
        raise ValueError("a_flags and b_flags must have the same length")
    n = len(a)
    if n == 0:
        return float("nan")
    labels = sorted(set(a) | set(b), key=repr)
    idx = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        cm[idx[x], idx[y]] += 1
    po = np.trace(cm) / n
    pe = float(cm.sum(axis=1) @ cm.sum(axis=0)) / (n * n)
    if math.isclose(pe, 1.0):
        return 1.0 if math.isclose(po, 1.0) else 0.0
    return float((po - pe) / (1.0 - pe))


def threshold_for_share(scores: Sequence[float] | np.ndarray, share: float) -> float:
    """The threshold ``t`` such that ``scores > t`` flags ``share`` of the scores (at most that share when
    scores tie). Used to compare two systems at an equal false-alarm share: threshold each system's scores
    on normal players at the same share."""
    s = np.sort(np.asarray(scores, dtype=float))[::-1]
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite scores")
    if not 0.0 <= share <= 1.0:
        raise ValueError("share must be in [0, 1]")
    k = int(math.floor(share * s.size + 1e-9))
    if k >= s.size:
        return float(np.nextafter(s[-1], -np.inf))
    return float(s[k])


def flags_at_share(scores: Sequence[float] | np.ndarray, share: float) -> np.ndarray:
    """Boolean flags ``scores > threshold_for_share(scores, share)``."""
    arr = np.asarray(scores, dtype=float)
    return arr > threshold_for_share(arr, share)


def kappa_at_equal_share(a_scores: Sequence[float], b_scores: Sequence[float], share: float) -> float:
    """Cohen's κ of two systems' anomaly flags when each flags the same ``share`` of the sample."""
    return cohens_kappa(flags_at_share(a_scores, share).tolist(), flags_at_share(b_scores, share).tolist())


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{n, mean, p10, p50, p90, min, max}`` (``None`` values when empty)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"n": 0, "mean": None, "p10": None, "p50": None, "p90": None, "min": None, "max": None}
    q = np.quantile(arr, [0.1, 0.5, 0.9])
    return {"n": int(arr.size), "mean": float(arr.mean()), "p10": float(q[0]), "p50": float(q[1]),
            "p90": float(q[2]), "min": float(arr.min()), "max": float(arr.max())}
