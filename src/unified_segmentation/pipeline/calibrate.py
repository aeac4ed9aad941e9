"""Taxonomy calibration from window features (DESIGN §4.2)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
from scipy import stats
from scipy.optimize import linear_sum_assignment

from ..core import calibration as cal
from ..core.naming import name_segments
from ..core.taxonomy import CONTEXTS, AxisModel, GameBehavioralTaxonomy, SegmentModel
from ..core.transform import MetricScaler
from ..errors import NotEnoughData
from ..features import HEAVY_TAILED, METRICS_BY_AXIS, select_custom_types, window_features, windows_for
from ..game_settings import GameSettings
from .anomalies import WindowPair, continuous_signals, count_signals, fit_anomaly_model
from .data import UNIVERSAL_AXES, align, compute_windows, first_seen, matrix
from .score import score_players

MIN_CALIBRATION_PLAYERS = 40


def rules_from(settings: GameSettings) -> cal.RuleConstants:
    return cal.RuleConstants(
        min_k=settings.min_k, max_k=settings.max_k, min_share=settings.min_segment_share,
        min_members=settings.min_segment_members, min_silhouette=settings.min_silhouette,
        sample_size=settings.sample_size, n_init=settings.n_init, seed=settings.seed,
    )


def _outcome_stats(prob: np.ndarray, primary: np.ndarray, k: int, outcomes: pl.DataFrame | None
                   ) -> list[dict]:
    """Per segment: ltv_mean, churn_rate, tickets per player, lifts, and correlations with membership."""
    empty = {"ltv_mean": None, "churn_rate": None, "support_tickets_per_player": None,
             "ltv_correlation": None, "churn_correlation": None, "support_risk_correlation": None}
    if outcomes is None:
        return [dict(empty) for _ in range(k)]
    out = []
    cols = {c: outcomes[c].cast(pl.Float64).to_numpy() if c in outcomes.columns else None
            for c in ("ltv", "churned", "support_tickets")}
    for s in range(k):
        d = dict(empty)
        m = primary == s
        for col, key, corr_key, kind in (("ltv", "ltv_mean", "ltv_correlation", "spearman"),
                                          ("churned", "churn_rate", "churn_correlation", "pointbiserial"),
                                          ("support_tickets", "support_tickets_per_player",
                                           "support_risk_correlation", "spearman")):
            v = cols[col]
            if v is None:
                continue
            ok = np.isfinite(v)
            if not ok.any():
                continue
            if (m & ok).any():
                d[key] = float(np.mean(v[m & ok]))
                overall = float(np.mean(v[ok]))
                d[key + "_lift"] = float(d[key] / overall) if overall else None
            x = prob[ok, s]
            y = v[ok]
            if len(y) > 2 and np.std(x) > 0 and np.std(y) > 0:
                r = stats.spearmanr(x, y)[0] if kind == "spearman" else stats.pointbiserialr(y, x)[0]
                d[corr_key] = float(r) if np.isfinite(r) else None
        out.append(d)
    return out


def _build_axis(axis_id: str, axis_name: str, axis_type: str, metrics: list[str], cols: np.ndarray,
                Z: np.ndarray, X: np.ndarray, scaler: MetricScaler, rules: cal.RuleConstants,
                dropped: list[str], next_id: int) -> tuple[AxisModel, np.ndarray]:
    fit = cal.fit_axis(Z, rules)
    centers_metric = scaler.inverse_columns(fit.centers, cols)
    centers_named = [{m: float(v) for m, v in zip(metrics, row, strict=True)} for row in centers_metric]
    if axis_type == "game_specific":
        centers_named = [{**c, **{f"z:{m}": float(z) for m, z in zip(metrics, zc, strict=True)}}
                         for c, zc in zip(centers_named, fit.centers, strict=True)]
    names, order = name_segments(axis_id if axis_type == "universal" else axis_name, centers_named)
    segments = []
    for s in range(fit.k):
        members = X[fit.labels == s]
        segments.append(SegmentModel(
            segment_id=next_id + s, segment_name=names[s], center=fit.centers[s],
            covariance=fit.covariances[s], center_metric=centers_metric[s],
            std_metric=members.std(axis=0) if len(members) else np.zeros(len(metrics)),
            weight=float(fit.counts[s] / max(fit.counts.sum(), 1)),
        ))
    reasons = []
    if fit.variance_explained < 0.70:
        reasons.append(f"variance explained {fit.variance_explained:.2f} < 0.70")
    if fit.variance_explained < fit.variance_explained_null + 0.15:
        reasons.append(f"variance explained {fit.variance_explained:.2f} < null "
                       f"{fit.variance_explained_null:.2f} + 0.15")
    if fit.weak_structure:
        reasons.append("weak_structure")
    axis = AxisModel(
        axis_id=axis_id, axis_name=axis_name, axis_type=axis_type, metrics=metrics, segments=segments,
        dropped_metrics=dropped, weak_structure=fit.weak_structure, order=order,
        variance_explained=fit.variance_explained, variance_explained_null=fit.variance_explained_null,
        selection={"inertias": {str(k): v for k, v in fit.inertias.items()}, "knee": fit.knee,
                   "silhouette": fit.silhouette, "stability": fit.stability, "chosen_k": fit.k,
                   "ridge": fit.ridge, "notes": fit.notes},
        quality={"flagged": bool(reasons), "reasons": reasons},
    )
    return axis, fit.labels


def _degenerate_axis(axis_id: str, metrics: list[str], dropped: list[str], reason: str, next_id: int
                     ) -> AxisModel:
    seg = SegmentModel(segment_id=next_id, segment_name=f"{axis_id}_none", center=np.zeros(0),
                       covariance=np.zeros((0, 0)), center_metric=np.zeros(0), std_metric=np.zeros(0),
                       weight=1.0, population_percentage=100.0)
    return AxisModel(axis_id=axis_id, axis_name=axis_id, axis_type="universal", metrics=[], segments=[seg],
                     degenerate=True, degenerate_reason=reason, dropped_metrics=dropped,
                     quality={"flagged": True, "reasons": [f"degenerate: {reason}"]})


def calibrate_frames(daily: pl.DataFrame, *, game_id: str, as_of: datetime, settings: GameSettings,
                     outcomes: pl.DataFrame | None = None,
                     previous: GameBehavioralTaxonomy | None = None,
                     first: pl.DataFrame | None = None) -> GameBehavioralTaxonomy:
    """Calibrate a taxonomy from the canonical daily frame.

    ``first`` (player_id, first_date) is each player's first stored activity when ``daily`` holds only
    the recent days; by default it is derived from ``daily``.
    """
    rules = rules_from(settings)
    custom = select_custom_types(daily)
    first = first_seen(daily) if first is None else first
    wins = compute_windows(daily, as_of, settings, custom_types=custom, first=first, which=("profile",))
    prof = wins["profile"]
    calib = prof.filter(pl.col("active_days") >= 1)
    n = calib.height
    if n < MIN_CALIBRATION_PLAYERS:
        raise NotEnoughData(f"only {n} players are active in the profile window; calibration needs at least "
                            f"{MIN_CALIBRATION_PLAYERS}")
    universal_metrics = [m for a in UNIVERSAL_AXES for m in METRICS_BY_AXIS[a]]
    custom_metrics = [f"{t}_per_day" for t in custom if f"{t}_per_day" in calib.columns]
    metrics = [m for m in universal_metrics if m in calib.columns] + custom_metrics
    unavailable = [m for m in universal_metrics if m not in calib.columns]
    X = matrix(calib, metrics)
    scaler = MetricScaler(metrics=metrics, log1p=[m in HEAVY_TAILED or m.endswith("_per_day") for m in metrics])
    scaler.fit(X)
    Z = scaler.transform(X)
    min_players = max(rules.min_members, int(np.ceil(rules.min_share * n)))
    varying = cal.varying_metrics(X, min_players)
    axes: list[AxisModel] = []
    labels: dict[str, np.ndarray] = {}
    next_id = 1
    for axis_id in UNIVERSAL_AXES:
        present = [m for m in METRICS_BY_AXIS[axis_id] if m in metrics]
        keep = [m for m in present if varying[metrics.index(m)]]
        dropped = [m for m in present if m not in keep]
        missing = [m for m in METRICS_BY_AXIS[axis_id] if m not in metrics]
        if not keep:
            reason = ("no metric varies for at least "
                      f"{min_players} players" if present else "its metrics are not available in this data")
            axes.append(_degenerate_axis(axis_id, present, dropped + missing, reason, next_id))
            next_id += 1
            continue
        cols = np.array([metrics.index(m) for m in keep])
        axis, lab = _build_axis(axis_id, axis_id, "universal", keep, cols, Z[:, cols], X[:, cols], scaler,
                                rules, dropped + missing, next_id)
        next_id += len(axis.segments)
        axes.append(axis)
        labels[axis_id] = lab
    # game-specific axes: PCA + varimax over the varying custom metrics
    spec = [m for m in custom_metrics if varying[metrics.index(m)]]
    pca_ratio: list[float] = []
    if spec:
        spec_cols = np.array([metrics.index(m) for m in spec])
        plans, pca_ratio = cal.plan_game_specific_axes(Z[:, spec_cols], seed=rules.seed)
        for plan in plans:
            order = np.argsort(-np.abs(plan.loadings))
            ms = [spec[i] for i in np.asarray(plan.metrics)[order]]
            stems = [m.removesuffix("_per_day") for m in ms[:2]]
            name = "_".join(stems)
            cols = np.array([metrics.index(m) for m in ms])
            axis, lab = _build_axis(name, name, "game_specific", ms, cols, Z[:, cols], X[:, cols], scaler,
                                    rules, [], next_id)
            next_id += len(axis.segments)
            axes.append(axis)
            labels[name] = lab
    active = [a for a in axes if not a.degenerate]
    total_p = sum(len(a.metrics) for a in active)
    for a in active:
        a.variance_share = len(a.metrics) / total_p
    payer_values = calib.filter(pl.col("purchases") > 0)["avg_purchase_value"] if "avg_purchase_value" in \
        calib.columns else pl.Series([], dtype=pl.Float64)
    taxonomy = GameBehavioralTaxonomy(
        game_id=game_id, as_of=as_of.isoformat(), last_calibrated=datetime.now(UTC).isoformat(),
        scaler=scaler, axes=axes, settings=settings.to_dict(), rules=rules.to_dict(),
        pca_explained_variance_ratio=pca_ratio, unavailable_metrics=unavailable, custom_types=custom,
        n_calibration_players=n,
        calibration_stats={"median_purchase_value": float(payer_values.median() or 1.0)
                           if len(payer_values) else 1.0,
                           "min_varying_players": int(min_players)},
    )
    # population percentages, outcomes (primaries from the kernel, as players will be scored)
    ps = score_players(taxonomy, calib)
    out_frame = align(outcomes, calib["player_id"]) if outcomes is not None else None
    for a in ps.axes:
        k = len(a.axis.segments)
        counts = np.bincount(a.scores.primary, minlength=k)
        stats_ = _outcome_stats(a.scores.probability, a.scores.primary, k, out_frame)
        for s, seg in enumerate(a.axis.segments):
            seg.population_percentage = float(100.0 * counts[s] / max(n, 1))
            seg.outcomes = stats_[s]
    _contextual(taxonomy, daily, calib, first, as_of, settings, custom, labels)
    # anomaly model from the null run (one current window back)
    null = compute_windows(daily, as_of, settings, custom_types=custom, first=first,
                           shift_days=settings.current_days, which=("current", "typical"))
    null_pair = WindowPair(null["current"], align(null["typical"], null["current"]["player_id"]))
    fit = compute_windows(daily, as_of, settings, custom_types=custom, first=first,
                          shift_days=2 * settings.current_days, which=("current", "typical"))
    fit_pair = WindowPair(fit["current"], align(fit["typical"], fit["current"]["player_id"]))
    enough = (fit_pair.e_typ >= settings.min_typical_days).sum() >= MIN_CALIBRATION_PLAYERS
    taxonomy.anomaly = fit_anomaly_model(taxonomy, null_pair, fit_pair if enough else None)
    taxonomy.anomaly["legacy"] = _fit_legacy(null_pair)
    taxonomy.calibration_stats["confidence_mean"] = float(np.mean(ps.confidence)) if n else None
    if previous is not None:
        report = match_segments(taxonomy, previous, calib)
        kept = [r["kept_share"] for r in report.values() if r.get("kept_share") is not None]
        taxonomy.calibration_stats["primary_segment_stability"] = float(np.mean(kept)) if kept else None
    return taxonomy


def _fit_legacy(null_pair: WindowPair) -> dict:
    from ..core.legacy import LegacyBaselineModel

    ok = null_pair.e_typ >= 7
    cur = {c: null_pair.cur[c].fill_null(0).to_numpy()[ok] for c in null_pair.cur.columns if c != "player_id"}
    typ = {c: null_pair.typ[c].fill_null(0).to_numpy()[ok] for c in null_pair.typ.columns if c != "player_id"}
    return LegacyBaselineModel.fit(cur, typ).to_dict()


def _contextual(taxonomy, daily, calib, first, as_of, settings, custom, labels) -> None:
    """Contextual centers (model space) and the segment rates / values the anomaly model mixes."""
    wins = windows_for(as_of, timezone=settings.timezone, profile_days=settings.profile_days,
                       current_days=settings.current_days, typical_days=settings.typical_days)
    ids = calib["player_id"]
    ctx_frames = {}
    for ctx in CONTEXTS:
        f = window_features(daily, wins["profile"], first_seen=first, holiday_country=settings.holiday_country,
                            context=ctx, custom_types=custom)
        ctx_frames[ctx] = align(f, ids)
    for axis in taxonomy.active_axes:
        lab = labels[axis.axis_id]
        cols = taxonomy.metric_index(axis.metrics)
        counts = count_signals(axis, calib)
        conts = continuous_signals(axis, taxonomy)
        for s, seg in enumerate(axis.segments):
            m = lab == s
            e = calib["exposure_days"].to_numpy()[m]
            seg.anomaly = {
                "rate": {c: float(np.mean(calib[c].fill_null(0).to_numpy()[m] / np.maximum(e, 1e-9)))
                         for c in counts},
                "value": {c: float(np.mean(calib[c].fill_null(0).to_numpy()[m])) for c in conts},
                "ctx_rate": {c: {} for c in counts}, "ctx_value": {c: {} for c in conts},
            }
        for ctx, f in ctx_frames.items():
            ectx = f["exposure_days"].fill_null(0).to_numpy()
            Xc = matrix(f, taxonomy.scaler.metrics)
            Zc = taxonomy.scaler.transform(Xc)[:, cols]
            for s, seg in enumerate(axis.segments):
                m = (lab == s) & (ectx > 0)
                if m.sum() < 5:
                    seg.contextual_centers[ctx] = None
                    continue
                seg.contextual_centers[ctx] = Zc[m].mean(axis=0)
                for c in counts:
                    seg.anomaly["ctx_rate"][c][ctx] = float(np.mean(
                        f[c].fill_null(0).to_numpy()[m] / np.maximum(ectx[m], 1e-9)))
                active = m & (f["sessions"].fill_null(0).to_numpy() > 0)
                for c in conts:
                    if active.sum() >= 5:
                        seg.anomaly["ctx_value"][c][ctx] = float(np.mean(f[c].fill_null(0).to_numpy()[active]))


def match_segments(new: GameBehavioralTaxonomy, old: GameBehavioralTaxonomy, calib: pl.DataFrame) -> dict:
    """Give matched segments of ``new`` the ids (and names) of ``old`` by Hungarian matching on the
    contingency table of primary segments of the calibration players scored by both."""
    ps_new = score_players(new, calib, with_confidence=False)
    ps_old = score_players(old, calib, with_confidence=False)
    used_ids = {s.segment_id for a in old.axes for s in a.segments}
    next_id = max(used_ids | {0}) + 1
    report = {}
    for a_new in new.axes:
        try:
            a_old = old.axis(a_new.axis_id)
        except KeyError:
            a_old = None
        if a_new.degenerate or a_old is None or a_old.degenerate:
            if a_old is not None and a_new.degenerate and a_old.degenerate:
                a_new.segments[0].segment_id = a_old.segments[0].segment_id
            else:
                for seg in a_new.segments:
                    seg.segment_id = next_id
                    next_id += 1
            continue
        pn = ps_new.axis_scores(a_new.axis_id).scores.primary
        po = ps_old.axis_scores(a_old.axis_id).scores.primary
        kn, ko = len(a_new.segments), len(a_old.segments)
        table = np.zeros((kn, ko))
        np.add.at(table, (pn, po), 1)
        rows, cols = linear_sum_assignment(-table)
        matched = {}
        for r, c in zip(rows, cols, strict=True):
            if table[r, c] > 0:
                matched[r] = c
        old_names = {a_old.segments[c].segment_name for c in matched.values()}
        for r, seg in enumerate(a_new.segments):
            if r in matched:
                o = a_old.segments[matched[r]]
                seg.segment_id = o.segment_id
                seg.segment_name = o.segment_name
            else:
                seg.segment_id = next_id
                next_id += 1
                base = seg.segment_name
                i = 2
                while seg.segment_name in old_names:
                    seg.segment_name = f"{base}_{i}"
                    i += 1
        kept = sum(table[r, c] for r, c in matched.items())
        report[a_new.axis_id] = {"contingency": table.tolist(),
                                 "matched": {int(r): int(c) for r, c in matched.items()},
                                 "kept_share": float(kept / max(table.sum(), 1))}
    return report
