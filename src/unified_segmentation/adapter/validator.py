"""Migration validator and shadow report (DESIGN §4.5).

``validate(pairs)`` compares (legacy, unified) profiles of a sample of players: equivalence rate
(similarity > 0.90), similarity distribution, per-axis primary agreement after Hungarian name matching, the
real (significant) differences, anomaly agreement (rate and Cohen's κ, also at an equal false-alarm share
when scores are given). ``shadow_report(records)`` aggregates stored shadow comparisons. Both return plain
JSON-ready dicts (the lead persists them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError

from .compare import (
    EQUIVALENT_ABOVE,
    NameMap,
    classify,
    cohens_kappa,
    compare,
    kappa_at_equal_share,
    match_names_by_axis,
    summarize,
)
from .profile import CompatProfile

MAX_DIFFERENCES = 200


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _kappa(a: list[bool], b: list[bool]) -> float | None:
    if not a:
        return None
    k = cohens_kappa(a, b)
    return None if math.isnan(k) else k


def _per_axis_agreement(pairs: Sequence[tuple[CompatProfile, CompatProfile]], name_map: NameMap) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for leg, uni in pairs:
        for axis, name in leg.primary_segments.items():
            other = uni.primary_segments.get(axis)
            if other is None:
                continue
            d = out.setdefault(axis, {"n": 0, "matched": 0, "raw": 0})
            d["n"] += 1
            d["raw"] += name == other
            d["matched"] += name_map.get(axis, {}).get(name, name) == other
    return {axis: {"n": d["n"], "agreement": d["matched"] / d["n"], "raw_agreement": d["raw"] / d["n"]}
            for axis, d in sorted(out.items())}


def _anomaly_agreement(pairs: Sequence[tuple[CompatProfile, CompatProfile]]) -> dict[str, Any]:
    both = [(a.anomalies, b.anomalies) for a, b in pairs if a.anomalies is not None and b.anomalies is not None]
    la = [x.is_anomalous for x, _ in both]
    ua = [y.is_anomalous for _, y in both]
    per_axis: dict[str, tuple[list[bool], list[bool]]] = {}
    for x, y in both:
        for axis, flag in x.axes.items():
            if axis in y.axes:
                ls, us = per_axis.setdefault(axis, ([], []))
                ls.append(flag)
                us.append(y.axes[axis])
    return {
        "n": len(both),
        "agreement_rate": _rate(sum(p == q for p, q in zip(la, ua, strict=True)), len(both)),
        "kappa": _kappa(la, ua),
        "legacy_flag_rate": _rate(sum(la), len(la)),
        "unified_flag_rate": _rate(sum(ua), len(ua)),
        "per_axis": {axis: {"n": len(ls), "agreement_rate": _rate(sum(p == q for p, q in zip(ls, us, strict=True)),
                                                                  len(ls)),
                            "kappa": _kappa(ls, us)}
                     for axis, (ls, us) in sorted(per_axis.items())},
    }


def validate(pairs: Sequence[tuple[CompatProfile, CompatProfile]], *, name_map: NameMap | None = None,
             anomaly_scores: Sequence[tuple[float, float]] | None = None, false_alarm_share: float | None = None,
             max_differences: int = MAX_DIFFERENCES) -> dict[str, Any]:
    """The migration-validation report over ``(legacy, unified)`` profile pairs of one sample.

    ``name_map`` defaults to Hungarian matching on this sample. ``anomaly_scores`` (per pair: legacy score,
    unified score; higher = more anomalous) adds κ at an equal false-alarm share: both systems thresholded
    to flag ``false_alarm_share`` of the sample (default: the legacy's own flag rate).
    Differences list only significant pairs (similarity < 0.70), at most ``max_differences``.
    """
    pairs = list(pairs)
    n = len(pairs)
    nm = name_map if name_map is not None else match_names_by_axis(pairs)
    comps = [compare(a, b, nm) for a, b in pairs]
    sims = [c.similarity for c in comps]
    classes = Counter(classify(s) for s in sims)
    differences = []
    for (leg, _), c, s in zip(pairs, comps, sims, strict=True):
        if classify(s) != "significant":
            continue
        differences.append({"player_id": leg.player_id, "similarity": s, "parts": c.differing_parts,
                            "primary": c.primary_diff, "baseline": c.baseline_diff, "anomalies": c.anomaly_diff})
    differences.sort(key=lambda d: (d["similarity"], d["player_id"]))
    anomalies = _anomaly_agreement(pairs)
    if anomaly_scores is not None:
        if len(anomaly_scores) != n:
            raise ValueError("anomaly_scores must have one (legacy, unified) score per pair")
        share = false_alarm_share
        if share is None:
            share = anomalies["legacy_flag_rate"] if anomalies["legacy_flag_rate"] is not None else 0.05
        ls = np.asarray([x for x, _ in anomaly_scores], float)
        us = np.asarray([y for _, y in anomaly_scores], float)
        anomalies["equal_share"] = {"share": share,
                                    "kappa": kappa_at_equal_share(ls, us, share) if n else None}
    return {
        "sample_size": n,
        "generated_at": datetime.now(UTC).isoformat(),
        "equivalence_rate": _rate(sum(s > EQUIVALENT_ABOVE for s in sims), n),
        "classes": {k: classes.get(k, 0) for k in ("equivalent", "minor", "significant")},
        "similarity": summarize(sims),
        "parts": {part: summarize([getattr(c, part) for c in comps if getattr(c, part) is not None])["mean"]
                  for part in ("primary", "baseline", "anomalies")},
        "per_axis_agreement": _per_axis_agreement(pairs, nm),
        "differences": differences[:max_differences],
        "differences_total": len(differences),
        "anomalies": anomalies,
        "name_map": nm,
    }


def _load(d: Any) -> CompatProfile | None:
    if isinstance(d, CompatProfile):
        return d
    if not isinstance(d, dict):
        return None
    try:
        return CompatProfile.model_validate(d)
    except ValidationError:
        return None


def _latency(values: Sequence[float | None]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if arr.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "max": None}
    return {"n": int(arr.size), "mean": float(arr.mean()), "p50": float(np.quantile(arr, 0.5)),
            "p95": float(np.quantile(arr, 0.95)), "max": float(arr.max())}


def shadow_report(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate stored shadow comparisons (``ShadowRecord.to_dict()`` rows).

    Agreement is recomputed with names matched over the whole shadow sample (``similarity_matched``) beside
    the similarity recorded at request time (``similarity``, raw or with the name map then in use).
    """
    records = list(records)
    n = len(records)
    errors = [r.get("error") for r in records if r.get("error")]
    kinds = Counter(str(e).split(":", 1)[0] for e in errors)
    pairs = []
    for r in records:
        if r.get("error"):
            continue
        leg, uni = _load(r.get("legacy")), _load(r.get("unified"))
        if leg is not None and uni is not None:
            pairs.append((leg, uni))
    nm = match_names_by_axis(pairs)
    matched = [compare(a, b, nm).similarity for a, b in pairs]
    recorded = [r["similarity"] for r in records if r.get("similarity") is not None]
    return {
        "runs": n,
        "compared": len(pairs),
        "errors": len(errors),
        "error_rate": _rate(len(errors), n),
        "error_kinds": dict(kinds.most_common()),
        "similarity": summarize(recorded),
        "similarity_matched": summarize(matched),
        "equivalence_rate": _rate(sum(s > EQUIVALENT_ABOVE for s in matched), len(matched)),
        "classes": {k: sum(classify(s) == k for s in matched) for k in ("equivalent", "minor", "significant")},
        "per_axis_agreement": _per_axis_agreement(pairs, nm),
        "anomalies": _anomaly_agreement(pairs),
        "latency_ms": {"legacy": _latency([r.get("legacy_ms") for r in records]),
                       "unified": _latency([r.get("unified_ms") for r in records])},
        "name_map": nm,
    }
