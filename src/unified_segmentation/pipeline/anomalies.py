"""Anomaly detection over window features: null-run calibration and current-window scoring (DESIGN §4.4)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..core import anomaly as an
from ..core.taxonomy import CONTEXTS, AxisModel, GameBehavioralTaxonomy
from .data import column, matrix, row_values

CRITICAL_WEIGHT = 1.0
OTHER_WEIGHT = 0.85
CUT = 0.7
#: A group of at most this many players (a micro-batch of requests) is detected player by player (see detect)
ONE_BY_ONE_MAX = 4


def _col(frame: pl.DataFrame, name: str) -> np.ndarray:
    return column(frame, name)


_SPEC_CACHE: dict[tuple[int, object], tuple[dict, object]] = {}
_SPEC_CACHE_MAX = 8192


def _from_spec(spec: dict, build):
    """``build(spec)`` for a stored model spec (a tail, an amount model, a surprise calibrator), built once
    per spec: specs are replaced, never edited, when a model is refitted, so the spec's identity is the key
    (the entry holds the spec, so its id is not reused while cached)."""
    key = (id(spec), build)
    hit = _SPEC_CACHE.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    model = build(spec)
    if len(_SPEC_CACHE) >= _SPEC_CACHE_MAX:
        _SPEC_CACHE.clear()
    _SPEC_CACHE[key] = (spec, model)
    return model


def _segments_of(seg: np.ndarray, k: int, fit: bool = False):
    """Segment indices a per-segment loop visits: all ``k`` (fitting, or more players than segments), else
    only those some player is in (a loop body does nothing for a segment without players)."""
    if fit or len(seg) > k:
        return range(k)
    return sorted(set(seg.tolist()))


def _ctx_exposure(frame: pl.DataFrame) -> np.ndarray:
    return np.stack([_col(frame, f"exposure_{c}") for c in CONTEXTS], axis=1)


def count_signals(axis: AxisModel, frame: pl.DataFrame) -> list[str]:
    if axis.axis_type == "universal":
        names = an.COUNT_SIGNALS.get(axis.axis_id, [])
    else:
        names = ["ev_" + m.removesuffix("_per_day") for m in axis.metrics]
    return [s for s in names if s in frame.columns]


def amount_signals(axis: AxisModel, frame: pl.DataFrame) -> list[tuple[str, str, str]]:
    if axis.axis_type != "universal":
        return []
    return [(m, t, c) for m, t, c in an.AMOUNT_SIGNALS.get(axis.axis_id, []) if t in frame.columns
            and c in frame.columns]


def continuous_signals(axis: AxisModel, taxonomy: GameBehavioralTaxonomy) -> list[str]:
    if axis.axis_type != "universal":
        return []
    return [m for m in an.CONTINUOUS_SIGNALS.get(axis.axis_id, []) if m in taxonomy.scaler.metrics]


@dataclass
class WindowPair:
    """Current and typical window features of the same players (same row order)."""

    cur: pl.DataFrame
    typ: pl.DataFrame
    e_cur: np.ndarray = field(init=False)
    e_typ: np.ndarray = field(init=False)
    ctx_cur: np.ndarray = field(init=False)
    ctx_typ: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.e_cur = _col(self.cur, "exposure_days")
        self.e_typ = _col(self.typ, "exposure_days")
        self.ctx_cur = _ctx_exposure(self.cur)
        self.ctx_typ = _ctx_exposure(self.typ)


def _seg_array(axis: AxisModel, key: str, signal: str, default: float = 0.0,
               seg: np.ndarray | None = None) -> np.ndarray:
    """Per segment, the stored ``anomaly[key][signal]``; with ``seg``, per player (``[seg]`` of that)."""
    if seg is not None and len(seg) <= len(axis.segments):  # few players: read only their segments
        segments = axis.segments
        return np.array([float(segments[i].anomaly.get(key, {}).get(signal, default)) for i in seg.tolist()],
                        dtype=np.float64)
    out = np.array([float(s.anomaly.get(key, {}).get(signal, default)) for s in axis.segments])
    return out if seg is None else out[seg]


def _seg_ctx(axis: AxisModel, key: str, signal: str, seg: np.ndarray | None = None) -> np.ndarray:
    """Per segment and context, the stored ``anomaly[key][signal][context]`` (NaN when absent); with
    ``seg``, per player."""
    few = seg is not None and len(seg) <= len(axis.segments)
    rows = [axis.segments[i] for i in seg.tolist()] if few else axis.segments
    out = np.full((len(rows), len(CONTEXTS)), np.nan)
    for i, s in enumerate(rows):
        d = s.anomaly.get(key, {}).get(signal, {})
        for j, c in enumerate(CONTEXTS):
            v = d.get(c)
            if v is not None:
                out[i, j] = float(v)
    return out if few or seg is None else out[seg]


COUNT_EXPOSURE = {"sessions": "exposure_days", "purchases": "active_days"}


def count_exposure(signal: str, frame: pl.DataFrame) -> np.ndarray:
    """What a count signal is a rate of: days for sessions, active days for purchases, sessions for social
    and game-specific events (so a quiet week is an engagement signal, not also a social one)."""
    col = COUNT_EXPOSURE.get(signal, "sessions")
    return _col(frame, col)


def expected_counts(axis: AxisModel, signal: str, pair: WindowPair, seg: np.ndarray, n0: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(μ for the current window before the game-wide shift, shrunk baseline rate r̂, the dispersion of
    the posterior predictive ``1/(a0 + count_typ)`` that the uncertainty of r̂ adds), shapes (n,).

    The pseudo-exposure of the shrinkage is the segment's empirical-Bayes prior strength ``b0``
    (``prior_n0``, fitted on the fit run), never less than the ``n0`` setting; ``a0 = b0·r_seg``.
    A model fitted before the prior existed keeps the setting and no parameter dispersion.
    """
    r_seg = _seg_array(axis, "rate", signal, seg=seg)
    b0 = _seg_array(axis, "prior_n0", signal, seg=seg)
    has_prior = b0 > 0
    count_typ = _col(pair.typ, signal)
    x_typ = count_exposure(signal, pair.typ)
    x_cur = count_exposure(signal, pair.cur)
    if signal == "sessions":
        # shrink with exposure days, as DESIGN 4.4 writes it
        n0_eff = np.maximum(b0, n0)
        r_hat = an.shrunk_rate(count_typ, pair.e_typ, r_seg, n0_eff)
        ctx = _seg_ctx(axis, "ctx_rate", signal, seg)
        cur_mix = _ctx_mix_rows(pair.ctx_cur, ctx, r_seg)
        typ_mix = _ctx_mix_rows(pair.ctx_typ, ctx, r_seg)
        factor = np.where((cur_mix > 0) & (typ_mix > 0), cur_mix / np.maximum(typ_mix, 1e-12), 1.0)
        mu = r_hat * x_cur * factor
    else:
        # per active day / per session: pseudo-exposure n0 scaled by the segment's exposure per day
        scale = np.where(pair.e_typ > 0, x_typ / np.maximum(pair.e_typ, 1e-9), 0.0)
        n0_eff = np.maximum(b0, n0 * np.maximum(scale, 0.25))
        r_hat = an.shrunk_rate(count_typ, x_typ, r_seg, n0_eff)
        mu = r_hat * x_cur
    shape = n0_eff * r_seg + count_typ
    alpha_param = np.where(has_prior, 1.0 / np.maximum(shape, 1e-4), 0.0)
    return mu, r_hat, alpha_param


def _ctx_mix_rows(weights: np.ndarray, per_ctx: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    if weights.shape[0] == 1 and per_ctx.shape[0] == 1 and fallback.shape == (1,):
        return np.array([_ctx_mix_one(weights[0].tolist(), per_ctx[0].tolist(), float(fallback[0]))])
    vals = np.where(np.isfinite(per_ctx), per_ctx, fallback[:, None])
    tot = weights.sum(axis=1)
    return np.where(tot > 0, (weights * vals).sum(axis=1) / np.maximum(tot, 1e-12), fallback)


def _ctx_mix_one(weights: list[float], per_ctx: list[float], fallback: float) -> float:
    """:func:`_ctx_mix_rows` of one row in floats (the row sums add left to right from 0.0, as numpy's do
    for a few contexts)."""
    tot = num = 0.0
    for w, v in zip(weights, per_ctx, strict=True):
        tot += w
        num += w * (v if math.isfinite(v) else fallback)
    return num / (tot if tot > 1e-12 or tot != tot else 1e-12) if tot > 0 else fallback


def expected_values(axis: AxisModel, metric: str, pair: WindowPair, seg: np.ndarray, x_typ: np.ndarray
                    ) -> np.ndarray:
    """Typical value moved by the segment's contextual-center mix of the current vs typical window."""
    base = _seg_array(axis, "value", metric, seg=seg)
    ctx = _seg_ctx(axis, "ctx_value", metric, seg)
    return x_typ + _ctx_mix_rows(pair.ctx_cur, ctx, base) - _ctx_mix_rows(pair.ctx_typ, ctx, base)


def _valid(metric: str, pair: WindowPair) -> np.ndarray:
    basis = an.VOLUME_BASIS.get(metric, "sessions")
    return (_col(pair.cur, basis) > 0) & (_col(pair.typ, basis) > 0)


def trimmed_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """Game-wide rate factor of a segment: Σnum/Σden, robust to the few players who are anomalous.

    The 2 % of rows with the largest excess (num − den) are dropped when at least 50 rows have a count;
    a factor within 3 standard errors of 1 is treated as no shift (returns 1.0).
    """
    num = np.asarray(num, float)
    den = np.asarray(den, float)
    if len(num) == 0 or den.sum() <= 0:
        return 1.0
    keep = np.ones(len(num), dtype=bool)
    if (num > 0).sum() >= 50:
        excess = num - den
        keep = excess <= np.quantile(excess, 0.98)
    g = float((num[keep].sum() + 0.5) / (den[keep].sum() + 0.5))
    se = 1.0 / np.sqrt(num[keep].sum() + 1.0)
    return g if abs(np.log(max(g, 1e-9))) > 3 * se else 1.0


@dataclass
class AxisSignals:
    p: np.ndarray  # (n, M)
    sign: np.ndarray  # (n, M)
    names: list[str]
    current: np.ndarray  # (n, M) current value (count rate per day for counts)
    typical: np.ndarray  # (n, M)
    baseline: np.ndarray  # (n, M)
    shifts: list[dict]
    tested: np.ndarray | None = None  # (n, M) bool: the metric had data for the player

    def combined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``an.combine`` over the metrics tested for each player."""
        return an.combine(self.p, self.sign, self.tested)


def axis_signals(taxonomy: GameBehavioralTaxonomy, axis: AxisModel, pair: WindowPair, seg: np.ndarray, *,
                 shifts: dict | None = None, fit: bool = False, estimate_shifts: bool = True) -> AxisSignals:
    """p-values of every signal of one axis. With ``fit=True`` (null run) the dispersions and tails are
    fitted on these players first and stored in the axis's segments. ``estimate_shifts=False``: game-wide
    shifts come from ``shifts`` alone, never from these players (each player's answer then does not
    depend on which other players are scored with it)."""
    n0 = float(taxonomy.settings.get("n0", 7.0))
    n = pair.cur.height
    k = len(axis.segments)
    ps, signs, names, curs, typs, bases, found_shifts, tested = [], [], [], [], [], [], [], []
    for signal in count_signals(axis, pair.cur):
        count = _col(pair.cur, signal)
        if fit:
            expo = count_exposure(signal, pair.cur)
            for s in range(k):
                m = seg == s
                tot = float(expo[m].sum())
                if m.sum() >= 20 and tot > 0:
                    axis.segments[s].anomaly.setdefault("rate", {})[signal] = (float(count[m].sum()) + 0.5) / tot
        if fit and signal in an.RATE_PRIOR_SIGNALS:
            count_typ = _col(pair.typ, signal)
            expo_typ = count_exposure(signal, pair.typ)
            expo_cur = count_exposure(signal, pair.cur)
            for s in range(k):
                m = seg == s
                if m.sum() >= 20:
                    b0, alpha_res = an.fit_rate_prior(count_typ[m], expo_typ[m], count[m], expo_cur[m])
                    axis.segments[s].anomaly.setdefault("prior_n0", {})[signal] = b0
                    axis.segments[s].anomaly.setdefault("alpha", {})[signal] = alpha_res
        mu0, r_hat, alpha_param = expected_counts(axis, signal, pair, seg, n0)
        g = np.ones(k)
        for s in _segments_of(seg, k, fit):
            m = seg == s
            if shifts is not None and (axis.axis_id, s, signal) in shifts:
                g[s] = shifts[(axis.axis_id, s, signal)]
            elif estimate_shifts and m.sum() >= 20:
                g[s] = trimmed_ratio(count[m], mu0[m])
            if estimate_shifts and m.sum() >= 20 and count[m].sum() > 0:
                se = 1.0 / np.sqrt(count[m].sum())
                if abs(np.log(max(g[s], 1e-9))) > 4 * se and abs(g[s] - 1) >= 0.10:
                    found_shifts.append({"axis": axis.axis_id, "segment_id": axis.segments[s].segment_id,
                                         "segment_name": axis.segments[s].segment_name, "signal": signal,
                                         "kind": "rate_factor", "value": float(g[s]), "players": int(m.sum())})
        mu = mu0 * g[seg]
        if fit:
            for s in range(k):
                m = seg == s
                if signal not in axis.segments[s].anomaly.get("prior_n0", {}) or m.sum() < 20:
                    axis.segments[s].anomaly.setdefault("alpha", {})[signal] = (
                        an.fit_dispersion(count[m], mu[m], alpha_param[m]) if m.sum() >= 20 else 0.0)
        alpha = np.minimum(_seg_array(axis, "alpha", signal, seg=seg) + alpha_param, 1e4)
        p, sg = an.count_p_value(count, mu, alpha)
        tested.append(np.ones(n, dtype=bool))
        ps.append(p)
        signs.append(sg)
        names.append(signal)
        curs.append(count / np.maximum(count_exposure(signal, pair.cur), 1e-9))
        typs.append(_col(pair.typ, signal) / np.maximum(count_exposure(signal, pair.typ), 1e-9))
        bases.append(r_hat)
    for metric, total, counted in amount_signals(axis, pair.cur):
        log_cur, n_cur = an.log_amounts(_col(pair.cur, total), _col(pair.cur, counted))
        log_typ, n_typ = an.log_amounts(_col(pair.typ, total), _col(pair.typ, counted))
        valid = n_cur > 0
        if fit:
            for s in range(k):
                m = seg == s
                model = an.fit_amount_model(log_cur[m], n_cur[m], log_typ[m], n_typ[m]) if m.sum() >= 20 else None
                axis.segments[s].anomaly.setdefault("amount", {})[metric] = model.to_dict() if model else None
        p = np.ones(n)
        sg = np.zeros(n)
        ell = log_typ.copy()
        based = n_typ > 0
        for s in _segments_of(seg, k):
            spec = axis.segments[s].anomaly.get("amount", {}).get(metric)
            m = (seg == s) & valid
            if not spec or not m.any():
                continue
            model = _from_spec(spec, an.AmountModel.from_dict)
            args = (log_cur[m], n_cur[m], log_typ[m], n_typ[m], model.level, model.s2, model.k0)
            _, ell[m] = an.amount_z(*args)
            based[m] = True
            if shifts is not None and (axis.axis_id, s, metric) in shifts:
                med = float(shifts[(axis.axis_id, s, metric)])
            else:
                # game-wide change of the amount per event (a sale): the segment's median log ratio
                med = 0.0
                d = log_cur[m] - ell[m]
                if estimate_shifts and m.sum() >= 20:
                    mid = float(np.median(d))
                    spread = 1.4826 * float(np.median(np.abs(d - mid))) + 1e-12
                    if abs(mid) > 4 * 1.2533 * spread / np.sqrt(m.sum()) and abs(mid) > 0.05:
                        med = mid
                        found_shifts.append({"axis": axis.axis_id, "segment_id": axis.segments[s].segment_id,
                                             "segment_name": axis.segments[s].segment_name, "signal": metric,
                                             "kind": "median_log_change", "value": med, "players": int(m.sum())})
            if model.tail is not None:
                z, _ = an.amount_z(*args, shift=med)
                idx = np.flatnonzero(m)
                p[idx], sg[idx] = an.tail_p_value(z, model.tail)
                ell[m] = ell[m] + med
        tested.append(valid)
        ps.append(p)
        signs.append(sg)
        names.append(metric)
        curs.append(np.where(valid, np.exp(log_cur), 0.0))
        typs.append(np.where(n_typ > 0, np.exp(log_typ), 0.0))
        bases.append(np.where(based, np.exp(ell), 0.0))
    for metric in continuous_signals(axis, taxonomy):
        x_cur = _col(pair.cur, metric)
        x_typ = _col(pair.typ, metric)
        expected = expected_values(axis, metric, pair, seg, x_typ)
        valid = _valid(metric, pair)
        diff = x_cur - expected
        med = np.zeros(k)
        for s in _segments_of(seg, k, fit):
            m = (seg == s) & valid
            if shifts is not None and (axis.axis_id, s, metric) in shifts:
                med[s] = shifts[(axis.axis_id, s, metric)]
            elif estimate_shifts and m.sum() >= 20:
                med[s] = float(np.median(diff[m]))
                spread = 1.4826 * float(np.median(np.abs(diff[m] - med[s]))) + 1e-12
                if abs(med[s]) > 4 * 1.2533 * spread / np.sqrt(m.sum()) and abs(med[s]) > 0.05 * (
                        abs(float(np.median(x_typ[m]))) + spread):
                    found_shifts.append({"axis": axis.axis_id, "segment_id": axis.segments[s].segment_id,
                                         "segment_name": axis.segments[s].segment_name, "signal": metric,
                                         "kind": "median_change", "value": float(med[s]),
                                         "players": int(m.sum())})
        diff = diff - med[seg]
        basis = _col(pair.cur, an.VOLUME_BASIS.get(metric, "sessions"))
        if fit:
            for s in range(k):
                m = (seg == s) & valid
                edges = an.volume_edges(basis[m], n_bins=max(1, min(3, int(m.sum()) // 150)))
                bins = an.volume_bins(basis[m], edges)
                overall = an.fit_tail(diff[m])
                tails = []
                for b in range(len(edges) + 1):
                    t = an.fit_tail(diff[m][bins == b])
                    tails.append((t or overall).to_dict() if (t or overall) else None)
                axis.segments[s].anomaly.setdefault("tails", {})[metric] = {
                    "edges": edges, "bins": tails, "all": overall.to_dict() if overall else None}
        p = np.ones(n)
        sg = np.zeros(n)
        for s in _segments_of(seg, k):
            spec = axis.segments[s].anomaly.get("tails", {}).get(metric)
            if not spec:
                continue
            m = (seg == s) & valid
            if not m.any():
                continue
            bins = an.volume_bins(basis[m], spec["edges"])
            idx = np.flatnonzero(m)
            for b, tail in enumerate(spec["bins"]):
                tail = tail or spec["all"]
                if tail is None:
                    continue
                sel = idx[bins == b]
                if len(sel):
                    p[sel], sg[sel] = an.tail_p_value(diff[sel], _from_spec(tail, an.TailModel.from_dict))
        tested.append(valid)
        ps.append(p)
        signs.append(sg)
        names.append(metric)
        curs.append(x_cur)
        typs.append(x_typ)
        bases.append(expected)
    if not names:
        z = np.zeros((n, 0))
        return AxisSignals(z, z, [], z, z, z, found_shifts)
    return AxisSignals(np.stack(ps, 1), np.stack(signs, 1), names, np.stack(curs, 1), np.stack(typs, 1),
                       np.stack(bases, 1), found_shifts, np.stack(tested, 1))


@dataclass
class DetectionResult:
    """Arrays aligned on ``player_ids``; per-axis arrays keyed by axis id."""

    player_ids: list[str]
    context: str
    is_anomalous: np.ndarray
    overall_score: np.ndarray
    surprise: np.ndarray
    p_value: np.ndarray
    confidence: np.ndarray
    insufficient: np.ndarray
    axes: dict[str, dict[str, np.ndarray]]
    signals: dict[str, AxisSignals]
    shifts: list[dict]
    segment: dict[str, np.ndarray]  # typical-window primary index per axis
    offsets_model: dict[str, np.ndarray]  # x_typ − μ_s* per axis (n, p)


def typical_segments(taxonomy: GameBehavioralTaxonomy, typ: pl.DataFrame) -> dict[str, tuple]:
    X = matrix(typ, taxonomy.scaler.metrics)
    Z = taxonomy.scaler.transform(X) if len(X) else X
    out = {}
    for axis in taxonomy.active_axes:
        cols = taxonomy.metric_index(axis.metrics)
        Za = np.ascontiguousarray(Z[:, cols])
        out[axis.axis_id] = (axis.kernel.score(Za).primary, Za, cols)
    return out


def detect(taxonomy: GameBehavioralTaxonomy, pair: WindowPair, *, context: str = "weekday",
           shifts: dict | None = None, estimate_shifts: bool = True) -> DetectionResult:
    """Score the current window of every player in ``pair`` against their own baseline (``estimate_shifts``:
    see :func:`axis_signals`)."""
    n = pair.cur.height
    if n == 1:  # a request: one player (no segment has 20 players, so no shift is estimated)
        return _detect_one(taxonomy, pair, context, shifts)
    if n <= ONE_BY_ONE_MAX and not estimate_shifts:  # a micro-batch of requests: cheaper player by player
        return _concat_results([_detect_one(taxonomy, pair, context, shifts, i) for i in range(n)])
    settings = taxonomy.settings
    min_typ = float(settings.get("min_typical_days", 7.0))
    mult = float((settings.get("context_multipliers") or {}).get(context, 1.0))
    insufficient = pair.e_typ < min_typ
    segs = typical_segments(taxonomy, pair.typ)
    Xc = matrix(pair.cur, taxonomy.scaler.metrics)
    Zc = taxonomy.scaler.transform(Xc) if len(Xc) else Xc
    axes_out: dict[str, dict[str, np.ndarray]] = {}
    signals: dict[str, AxisSignals] = {}
    all_shifts: list[dict] = []
    overall = np.zeros(n)
    surprise_max = np.zeros(n)
    p_min = np.ones(n)
    seg_out, off_out = {}, {}
    active = taxonomy.active_axes
    for axis in active:
        seg, Zt, cols = segs[axis.axis_id]
        sig = axis_signals(taxonomy, axis, pair, seg, shifts=shifts, estimate_shifts=estimate_shifts)
        signals[axis.axis_id] = sig
        all_shifts += sig.shifts
        raw, p_axis, which, sign = sig.combined()
        surprise = np.where(insufficient, 0.0, calibrate_surprise(axis, raw, seg))
        threshold = float(axis.anomaly_threshold or 1.0) * mult
        score = an.anomaly_scores(surprise, threshold)
        w = CRITICAL_WEIGHT if axis.critical else OTHER_WEIGHT
        overall = np.maximum(overall, w * score)
        surprise_max = np.maximum(surprise_max, surprise)
        p_min = np.minimum(p_min, p_axis)
        c, cur_d, typ_d, dev = _distances(axis.kernel, seg, Zc[:, cols], Zt)
        directions = np.array([an.direction_name(axis.axis_id, sig.names[i] if sig.names else "", sg)
                               for i, sg in zip(which, sign, strict=True)], dtype=object) if n else np.array([])
        axes_out[axis.axis_id] = {
            "segment": seg, "current_distance": cur_d, "typical_distance": typ_d,
            "distance_delta": cur_d - typ_d, "deviation": dev, "surprise": surprise, "p_value": p_axis,
            "anomaly_score": score, "threshold": np.full(n, threshold),
            "is_anomalous": score > CUT, "direction": directions, "which": which,
        }
        seg_out[axis.axis_id] = seg
        off_out[axis.axis_id] = Zt - c
    n_axes = max(len(active), 1)
    e_typ_share = np.minimum(1.0, pair.e_typ / max(float(settings.get("typical_days", 28)), 1.0))
    e_cur_share = np.minimum(1.0, pair.e_cur / max(float(settings.get("current_days", 7)), 1.0))
    confidence = np.where(insufficient, 0.0, e_typ_share * e_cur_share)
    return DetectionResult(
        player_ids=pair.cur["player_id"].to_list(), context=context,
        is_anomalous=(overall > CUT) & ~insufficient, overall_score=overall, surprise=surprise_max,
        p_value=np.minimum(1.0, p_min * n_axes), confidence=confidence, insufficient=insufficient,
        axes=axes_out, signals=signals, shifts=all_shifts, segment=seg_out, offsets_model=off_out,
    )


def _distances(kern, seg: np.ndarray, Zca: np.ndarray, Zt: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(each player's segment center, current / typical distance to it, current-to-typical deviation)
    under the segment's precision."""
    L = kern.prec_chol_[seg]
    c = kern.centers_[seg]
    return (c, an.mahalanobis_rows(Zca - c, L), an.mahalanobis_rows(Zt - c, L),
            an.mahalanobis_rows(Zca - Zt, L))


def calibrate_surprise(axis: AxisModel, raw: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Per-segment empirical-null recalibration of raw surprise (identity where none was fitted)."""
    out = np.asarray(raw, float).copy()
    fallback = axis.selection.get("surprise_calibrator")
    for s in _segments_of(seg, len(axis.segments)):
        spec = axis.segments[s].anomaly.get("surprise_calibrator") or fallback
        m = seg == s
        if spec and m.any():
            out[m] = _from_spec(spec, an.SurpriseCalibrator.from_dict)(raw[m])
    return out


def fit_anomaly_model(taxonomy: GameBehavioralTaxonomy, null_pair: WindowPair,
                      fit_pair: WindowPair | None = None) -> dict:
    """Fit the count dispersions, continuous tails and per-segment surprise calibrators on the fit run
    (two windows back), then set per-axis thresholds so that the null run (one window back) flags its
    share of the alarm budget: out of sample, so the threshold sees what the current week will."""
    min_typ = float(taxonomy.settings.get("min_typical_days", 7.0))
    fit_pair = fit_pair or null_pair

    def usable(pair: WindowPair) -> tuple[WindowPair, dict]:
        ok = pair.e_typ >= min_typ
        sub = WindowPair(pair.cur.filter(pl.Series(ok)), pair.typ.filter(pl.Series(ok)))
        return sub, typical_segments(taxonomy, sub.typ)

    fit_sub, fit_segs = usable(fit_pair)
    null_sub, null_segs = usable(null_pair)
    null_surprise = {}
    for axis in taxonomy.active_axes:
        seg_fit = fit_segs[axis.axis_id][0]
        axis_signals(taxonomy, axis, fit_sub, seg_fit, fit=True)
        raw_fit = axis_signals(taxonomy, axis, fit_sub, seg_fit).combined()[0]
        overall = an.SurpriseCalibrator.fit(raw_fit)
        axis.selection["surprise_calibrator"] = overall.to_dict() if overall else None
        for s, segment in enumerate(axis.segments):
            cal = an.SurpriseCalibrator.fit(raw_fit[seg_fit == s])
            segment.anomaly["surprise_calibrator"] = cal.to_dict() if cal else None
        seg_null = null_segs[axis.axis_id][0]
        raw_null = axis_signals(taxonomy, axis, null_sub, seg_null).combined()[0]
        null_surprise[axis.axis_id] = calibrate_surprise(axis, raw_null, seg_null)
    alarm_rate = float(taxonomy.settings.get("alarm_rate", 0.004))
    thresholds = an.null_thresholds(null_surprise, alarm_rate, CUT)
    for axis in taxonomy.active_axes:
        axis.anomaly_threshold = thresholds.get(axis.axis_id, 1.0)
    return {
        "null_players": null_sub.cur.height,
        "fit_players": fit_sub.cur.height,
        "cross_fitted": fit_pair is not null_pair,
        "alarm_rate": alarm_rate,
        "null_surprise_quantiles": {
            a: [float(q) for q in np.quantile(s, [0.5, 0.9, 0.99, 0.999])] if len(s) else []
            for a, s in null_surprise.items()
        },
    }


# ---------------------------------------------------------------------------- one player
# A request detects one player: the same operations as the array code above on Python floats, chosen
# by ``if`` instead of masks (numpy's per-call cost dominates at n = 1). Transcendental functions stay
# numpy's (``np.log`` / ``np.exp`` / ``np.log10`` / ``np.interp``, the same loops as on arrays), so each
# value is the array path's to the bit; tests compare the two on many players.
_mx, _mn = an._mx, an._mn


def _fdiv(a: float, b: float) -> float:
    """``a / b`` as numpy divides float64 (a zero divisor gives ±inf or NaN, not an exception)."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _ctx_one(segment, key: str, signal: str) -> list[float]:
    """``_seg_ctx`` of one segment: the stored per-context values, NaN where absent."""
    d = segment.anomaly.get(key, {}).get(signal, {})
    out = []
    for c in CONTEXTS:
        v = d.get(c)
        out.append(math.nan if v is None else float(v))
    return out


@dataclass
class _Row:
    """One player's current and typical window as floats (absent columns read as 0)."""

    cur: dict[str, float]
    typ: dict[str, float]
    ctx_cur: list[float]
    ctx_typ: list[float]
    cur_columns: list[str]

    @classmethod
    def of(cls, pair: WindowPair, i: int = 0) -> _Row:
        cur, typ = row_values(pair.cur, i), row_values(pair.typ, i)
        return cls(cur, typ, [cur.get(f"exposure_{c}", 0.0) for c in CONTEXTS],
                   [typ.get(f"exposure_{c}", 0.0) for c in CONTEXTS], pair.cur.columns)


def _count_one(axis: AxisModel, s: int, signal: str, row: _Row, n0: float, shifts: dict | None
               ) -> tuple[float, float, float, float, float]:
    """``(p, sign, current, typical, baseline)`` of a count signal (``axis_signals`` at n = 1)."""
    segment = axis.segments[s]
    anomaly = segment.anomaly
    cur, typ = row.cur, row.typ
    r_seg = float(anomaly.get("rate", {}).get(signal, 0.0))
    b0 = float(anomaly.get("prior_n0", {}).get(signal, 0.0))
    count_typ = typ.get(signal, 0.0)
    expo = COUNT_EXPOSURE.get(signal, "sessions")
    x_typ, x_cur = typ.get(expo, 0.0), cur.get(expo, 0.0)
    e_typ = typ.get("exposure_days", 0.0)
    if signal == "sessions":
        n0_eff = _mx(b0, n0)
        r_hat = _fdiv(count_typ + n0_eff * r_seg, e_typ + n0_eff)
        ctx = _ctx_one(segment, "ctx_rate", signal)
        cur_mix = _ctx_mix_one(row.ctx_cur, ctx, r_seg)
        typ_mix = _ctx_mix_one(row.ctx_typ, ctx, r_seg)
        factor = _fdiv(cur_mix, _mx(typ_mix, 1e-12)) if cur_mix > 0 and typ_mix > 0 else 1.0
        mu0 = r_hat * x_cur * factor
    else:
        scale = _fdiv(x_typ, _mx(e_typ, 1e-9)) if e_typ > 0 else 0.0
        n0_eff = _mx(b0, n0 * _mx(scale, 0.25))
        r_hat = _fdiv(count_typ + n0_eff * r_seg, x_typ + n0_eff)
        mu0 = r_hat * x_cur
    shape = n0_eff * r_seg + count_typ
    alpha_param = _fdiv(1.0, _mx(shape, 1e-4)) if b0 > 0 else 0.0
    g = 1.0
    if shifts is not None and (axis.axis_id, s, signal) in shifts:
        g = float(shifts[(axis.axis_id, s, signal)])
    mu = mu0 * g
    alpha = _mn(float(anomaly.get("alpha", {}).get(signal, 0.0)) + alpha_param, 1e4)
    count = cur.get(signal, 0.0)
    p, sg = an.count_p_one(count, mu, alpha)
    return (p, sg, _fdiv(count, _mx(x_cur, 1e-9)), _fdiv(count_typ, _mx(x_typ, 1e-9)), r_hat)


def _log_amount_one(total: float, count: float) -> tuple[float, float]:
    """``an.log_amounts`` of one player."""
    if count > 0 and total > 0:
        return float(np.log(total / count)), count
    return 0.0, 0.0


def _amount_one(axis: AxisModel, s: int, metric: str, total: str, counted: str, row: _Row,
                shifts: dict | None) -> tuple[float, float, float, float, float, bool]:
    """``(p, sign, current, typical, baseline, tested)`` of an amount signal (``axis_signals`` at n = 1)."""
    log_cur, n_cur = _log_amount_one(row.cur.get(total, 0.0), row.cur.get(counted, 0.0))
    log_typ, n_typ = _log_amount_one(row.typ.get(total, 0.0), row.typ.get(counted, 0.0))
    valid = n_cur > 0
    p, sg, ell, based = 1.0, 0.0, log_typ, n_typ > 0
    spec = axis.segments[s].anomaly.get("amount", {}).get(metric)
    if spec and valid:
        model = _from_spec(spec, an.AmountModel.from_dict)
        level, s2, k0 = float(model.level), float(model.s2), float(model.k0)
        ell = (n_typ * log_typ + k0 * level) / _mx(n_typ + k0, 1e-12)
        based = True
        if shifts is not None and (axis.axis_id, s, metric) in shifts:
            med = float(shifts[(axis.axis_id, s, metric)])
        else:
            med = 0.0
        if model.tail is not None:
            var = s2 * (1.0 / _mx(n_cur, 1.0) + 1.0 / _mx(n_typ + k0, 1e-12))
            z = (log_cur - ell - med) / math.sqrt(_mx(var, 1e-12))  # n_cur > 0 (valid)
            p, sg = an.tail_p_one(z, model.tail)
            ell = ell + med
    e_cur, e_typ, e_ell = np.exp(np.array([log_cur, log_typ, ell])).tolist()
    return p, sg, (e_cur if valid else 0.0), (e_typ if n_typ > 0 else 0.0), (e_ell if based else 0.0), valid


def _continuous_one(axis: AxisModel, s: int, metric: str, row: _Row, shifts: dict | None
                    ) -> tuple[float, float, float, float, float, bool]:
    """``(p, sign, current, typical, baseline, tested)`` of a continuous signal (``axis_signals`` at n = 1)."""
    segment = axis.segments[s]
    x_cur, x_typ = row.cur.get(metric, 0.0), row.typ.get(metric, 0.0)
    base = float(segment.anomaly.get("value", {}).get(metric, 0.0))
    ctx = _ctx_one(segment, "ctx_value", metric)
    expected = x_typ + _ctx_mix_one(row.ctx_cur, ctx, base) - _ctx_mix_one(row.ctx_typ, ctx, base)
    basis_name = an.VOLUME_BASIS.get(metric, "sessions")
    basis = row.cur.get(basis_name, 0.0)
    valid = basis > 0 and row.typ.get(basis_name, 0.0) > 0
    med = 0.0
    if shifts is not None and (axis.axis_id, s, metric) in shifts:
        med = float(shifts[(axis.axis_id, s, metric)])
    diff = x_cur - expected - med
    p, sg = 1.0, 0.0
    spec = segment.anomaly.get("tails", {}).get(metric)
    if spec and valid:
        b = bisect.bisect_right(spec["edges"], basis)  # an.volume_bins of one value
        if b < len(spec["bins"]):
            tail = spec["bins"][b] or spec["all"]
            if tail is not None:
                p, sg = an.tail_p_one(diff, _from_spec(tail, an.TailModel.from_dict))
    return p, sg, x_cur, x_typ, expected, valid


def _axis_signals_one(taxonomy: GameBehavioralTaxonomy, axis: AxisModel, row: _Row, s: int,
                      shifts: dict | None) -> tuple[AxisSignals, tuple[float, float, int, float]]:
    """:func:`axis_signals` of one player in segment ``s`` and its ``combined()`` as floats
    ``(surprise, p_axis, which, sign)``."""
    n0 = float(taxonomy.settings.get("n0", 7.0))
    names: list[str] = []
    out: list[tuple] = []
    if axis.axis_type == "universal":
        counts = an.COUNT_SIGNALS.get(axis.axis_id, [])
    else:
        counts = ["ev_" + m.removesuffix("_per_day") for m in axis.metrics]
    columns = row.cur_columns
    for signal in counts:
        if signal in columns:
            names.append(signal)
            out.append((*_count_one(axis, s, signal, row, n0, shifts), True))
    if axis.axis_type == "universal":
        for metric, total, counted in an.AMOUNT_SIGNALS.get(axis.axis_id, []):
            if total in columns and counted in columns:
                names.append(metric)
                out.append(_amount_one(axis, s, metric, total, counted, row, shifts))
        scaled = taxonomy.scaler.metrics
        for metric in an.CONTINUOUS_SIGNALS.get(axis.axis_id, []):
            if metric in scaled:
                names.append(metric)
                out.append(_continuous_one(axis, s, metric, row, shifts))
    if not names:
        z = np.zeros((1, 0))
        return AxisSignals(z, z, [], z, z, z, []), (0.0, 1.0, 0, 0.0)
    ps, signs, curs, typs, bases, tested = (list(col) for col in zip(*out, strict=True))
    # an.combine of one row: Bonferroni over the tested metrics, the first smallest p (NaN first)
    which, pmin = 0, ps[0]
    if pmin == pmin:
        for j in range(1, len(ps)):
            v = ps[j]
            if v != v:
                which, pmin = j, v
                break
            if v < pmin:
                which, pmin = j, v
    mult = float(max(sum(tested), 1))
    p_axis = _mn(1.0, mult * pmin)
    surprise = _mx(0.0, -float(np.log10(_mx(mult * pmin, an.P_FLOOR))))
    block = np.array([ps, signs, curs, typs, bases])
    sig = AxisSignals(block[0:1], block[1:2], names, block[2:3], block[3:4], block[4:5], [],
                      np.array([tested], dtype=bool))
    return sig, (surprise, p_axis, which, signs[which])


def _detect_one(taxonomy: GameBehavioralTaxonomy, pair: WindowPair, context: str, shifts: dict | None,
                i: int = 0) -> DetectionResult:
    """:func:`detect` of the player in row ``i`` of ``pair``, in floats where numpy's per-call cost
    would dominate."""
    settings = taxonomy.settings
    row = _Row.of(pair, i)
    min_typ = float(settings.get("min_typical_days", 7.0))
    mult = float((settings.get("context_multipliers") or {}).get(context, 1.0))
    e_typ, e_cur = row.typ.get("exposure_days", 0.0), row.cur.get("exposure_days", 0.0)
    insufficient = e_typ < min_typ
    metrics = taxonomy.scaler.metrics
    scaler = taxonomy.scaler
    # both windows in one transform (element by element, as two calls give)
    Z2 = scaler.transform(np.array([[row.typ.get(m, 0.0) for m in metrics], [row.cur.get(m, 0.0) for m in metrics]]))
    pos = {m: i for i, m in enumerate(metrics)}
    axes_out: dict[str, dict[str, np.ndarray]] = {}
    signals: dict[str, AxisSignals] = {}
    overall, surprise_max, p_min = 0.0, 0.0, 1.0
    seg_out, off_out = {}, {}
    active = taxonomy.active_axes
    for axis in active:
        cols = np.array([pos[m] for m in axis.metrics], dtype=np.int64)
        Zt = Z2[0:1, cols]  # a fresh contiguous array
        kern = axis.kernel
        seg = kern.primary(Zt)
        s = int(seg[0])
        sig, (raw, p_axis, which, sign) = _axis_signals_one(taxonomy, axis, row, s, shifts)
        signals[axis.axis_id] = sig
        spec = axis.segments[s].anomaly.get("surprise_calibrator") or axis.selection.get("surprise_calibrator")
        calibrated = _from_spec(spec, an.SurpriseCalibrator.from_dict).one(raw) if spec else raw
        surprise = 0.0 if insufficient else calibrated
        threshold = float(axis.anomaly_threshold or 1.0) * mult
        score = _mn(1.0, surprise / max(threshold, 1e-9))
        w = CRITICAL_WEIGHT if axis.critical else OTHER_WEIGHT
        overall = _mx(overall, w * score)
        surprise_max = _mx(surprise_max, surprise)
        p_min = _mn(p_min, p_axis)
        # the three distances in one product: rows (current, typical, current - typical), one factor
        c = kern.centers_[s:s + 1]
        Zca = Z2[1:2, cols]
        d = an.mahalanobis_rows(np.concatenate([Zca - c, Zt - c, Zca - Zt]), kern.prec_chol_[[s, s, s]])
        cur_d, typ_d = d[0:1], d[1:2]
        direction = an.direction_name(axis.axis_id, sig.names[which] if sig.names else "", sign)
        f = np.array([surprise, p_axis, score, threshold])
        axes_out[axis.axis_id] = {
            "segment": seg, "current_distance": cur_d, "typical_distance": typ_d,
            "distance_delta": cur_d - typ_d, "deviation": d[2:3], "surprise": f[0:1],
            "p_value": f[1:2], "anomaly_score": f[2:3], "threshold": f[3:4],
            "is_anomalous": np.array([score > CUT]), "direction": np.array([direction], dtype=object),
            "which": np.array([which], dtype=np.int64),
        }
        seg_out[axis.axis_id] = seg
        off_out[axis.axis_id] = Zt - c
    n_axes = max(len(active), 1)
    e_typ_share = _mn(1.0, e_typ / max(float(settings.get("typical_days", 28)), 1.0))
    e_cur_share = _mn(1.0, e_cur / max(float(settings.get("current_days", 7)), 1.0))
    confidence = 0.0 if insufficient else e_typ_share * e_cur_share
    return DetectionResult(
        player_ids=pair.cur["player_id"].to_list()[i:i + 1], context=context,
        is_anomalous=np.array([overall > CUT and not insufficient]), overall_score=np.array([overall]),
        surprise=np.array([surprise_max]), p_value=np.array([_mn(1.0, p_min * n_axes)]),
        confidence=np.array([confidence]), insufficient=np.array([insufficient]),
        axes=axes_out, signals=signals, shifts=[], segment=seg_out, offsets_model=off_out,
    )


def _concat_results(parts: list[DetectionResult]) -> DetectionResult:
    """One result of the players of ``parts`` (one-player results of the same axes and context), in order."""
    cat = np.concatenate
    first = parts[0]
    axes = {a: {k: cat([p.axes[a][k] for p in parts]) for k in d} for a, d in first.axes.items()}
    signals = {}
    for a, sig in first.signals.items():
        sigs = [p.signals[a] for p in parts]
        signals[a] = AxisSignals(
            p=cat([x.p for x in sigs]), sign=cat([x.sign for x in sigs]), names=sig.names,
            current=cat([x.current for x in sigs]), typical=cat([x.typical for x in sigs]),
            baseline=cat([x.baseline for x in sigs]), shifts=[],
            tested=None if sig.tested is None else cat([x.tested for x in sigs]))
    return DetectionResult(
        player_ids=[pid for p in parts for pid in p.player_ids], context=first.context,
        is_anomalous=cat([p.is_anomalous for p in parts]), overall_score=cat([p.overall_score for p in parts]),
        surprise=cat([p.surprise for p in parts]), p_value=cat([p.p_value for p in parts]),
        confidence=cat([p.confidence for p in parts]), insufficient=cat([p.insufficient for p in parts]),
        axes=axes, signals=signals, shifts=[], segment={a: cat([p.segment[a] for p in parts]) for a in first.segment},
        offsets_model={a: cat([p.offsets_model[a] for p in parts]) for a in first.offsets_model},
    )
