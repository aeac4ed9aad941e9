"""The pure library API: frames in, Polars frames out (DESIGN §7).

>>> import unified_segmentation as us
>>> taxonomy = us.calibrate(events, game_id="g", as_of=t)          # doctest: +SKIP
>>> profiles = us.categorize(taxonomy, events, as_of=t)           # doctest: +SKIP
>>> anomalies = us.detect_anomalies(taxonomy, events, as_of=t)    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..core.taxonomy import GameBehavioralTaxonomy
from ..errors import InvalidInput, PlayerNotFound
from ..features import DailyRows, window_context, window_feature_arrays, windows_for
from ..game_settings import GameSettings
from .anomalies import DetectionResult, WindowPair, detect
from .calibrate import calibrate_frames
from .data import ArrayFrame, align, as_settings, compute_windows, first_seen, resolve_as_of, to_daily
from .score import ProfileScores, profiles_frame, score_players

__all__ = [
    "calibrate", "categorize", "detect_anomalies", "categorize_player", "detect_player_anomalies",
    "score_profiles", "run_detection", "detections_frame", "score_player_rows", "detect_player_rows", "score_rows",
    "detect_rows",
]


def _settings_of(taxonomy: GameBehavioralTaxonomy) -> GameSettings:
    cached = getattr(taxonomy, "_game_settings", None)
    if cached is None or cached[0] is not taxonomy.settings:
        cached = (taxonomy.settings, GameSettings.from_dict(taxonomy.settings))
        taxonomy._game_settings = cached
    return cached[1]


def calibrate(data, *, game_id: str, as_of=None, outcomes=None, settings=None,
              previous: GameBehavioralTaxonomy | None = None) -> GameBehavioralTaxonomy:
    """Discover a game's taxonomy from events or daily rows.

    Parameters
    ----------
    data : polars or pandas DataFrame
        Canonical events (``us.read_events``) or daily rows (``us.read_daily``).
    game_id : str
    as_of : datetime or ISO string, optional
        Defaults to the settings' ``default_as_of``, else now.
    outcomes : DataFrame, optional
        ``player_id, ltv, churned, support_tickets``.
    settings : GameSettings or dict, optional
    previous : GameBehavioralTaxonomy, optional
        The game's previous version; matched segments keep their ids and names.
    """
    s = as_settings(settings)
    daily = to_daily(data, s.timezone)
    if outcomes is not None and not isinstance(outcomes, pl.DataFrame):
        outcomes = pl.from_pandas(outcomes)
    return calibrate_frames(daily, game_id=game_id, as_of=resolve_as_of(as_of, s), settings=s,
                            outcomes=outcomes, previous=previous)


def score_profiles(taxonomy: GameBehavioralTaxonomy, daily: pl.DataFrame, as_of, *, player_ids=None,
                   first: pl.DataFrame | None = None) -> ProfileScores:
    """Array-level categorization of every known player (or ``player_ids``) of a daily frame."""
    s = _settings_of(taxonomy)
    as_of = resolve_as_of(as_of, s)
    if player_ids is not None:
        daily = daily.filter(pl.col("player_id").is_in(list(player_ids)))
    frames = compute_windows(daily, as_of, s, custom_types=taxonomy.custom_types, first=first,
                             which=("profile",))
    prof = frames["profile"]
    if player_ids is not None:
        missing = set(player_ids) - set(prof["player_id"].to_list())
        if missing:
            raise PlayerNotFound(f"unknown player(s): {', '.join(sorted(missing)[:5])}")
    return score_players(taxonomy, prof)


def categorize(taxonomy: GameBehavioralTaxonomy, data, *, as_of=None, player_ids=None) -> pl.DataFrame:
    """Fuzzy memberships: one row per player × axis × segment (``is_primary`` marks the primary)."""
    daily = to_daily(data, taxonomy.settings.get("timezone", "UTC"))
    ps = score_profiles(taxonomy, daily, as_of, player_ids=player_ids)
    frame = profiles_frame(taxonomy, ps)
    extra = pl.DataFrame({"player_id": ps.player_ids, "player_confidence": ps.confidence,
                          "variance_coverage": ps.variance_coverage})
    return frame.join(extra, on="player_id", how="left") if frame.height else frame


def run_detection(taxonomy: GameBehavioralTaxonomy, daily: pl.DataFrame, as_of, *, player_ids=None,
                  first: pl.DataFrame | None = None, shifts: dict | None = None) -> DetectionResult:
    """Array-level anomaly detection for every known player (or ``player_ids``)."""
    s = _settings_of(taxonomy)
    as_of = resolve_as_of(as_of, s)
    first = first_seen(daily) if first is None else first
    if player_ids is not None:
        daily = daily.filter(pl.col("player_id").is_in(list(player_ids)))
        first = first.filter(pl.col("player_id").is_in(list(player_ids)))
    frames = compute_windows(daily, as_of, s, custom_types=taxonomy.custom_types, first=first,
                             which=("current", "typical"))
    cur = frames["current"]
    if player_ids is not None:
        missing = set(player_ids) - set(cur["player_id"].to_list())
        if missing:
            raise PlayerNotFound(f"unknown player(s): {', '.join(sorted(missing)[:5])}")
    pair = WindowPair(cur, align(frames["typical"], cur["player_id"]))
    return _detect_pair(taxonomy, pair, _windows(as_of, s), s, shifts)


def _windows(as_of, s: GameSettings) -> dict:
    return windows_for(as_of, timezone=s.timezone, profile_days=s.profile_days,
                       current_days=s.current_days, typical_days=s.typical_days)


def _detect_pair(taxonomy: GameBehavioralTaxonomy, pair: WindowPair, wins: dict, s: GameSettings,
                 shifts: dict | None, *, estimate_shifts: bool = True) -> DetectionResult:
    ctx = window_context(wins["current"], s.holiday_country)
    return detect(taxonomy, pair, context=ctx, shifts=shifts, estimate_shifts=estimate_shifts)


def _player_frame(taxonomy: GameBehavioralTaxonomy, rows: DailyRows, window, s: GameSettings,
                  *, align_to: np.ndarray | None = None) -> tuple[np.ndarray, ArrayFrame | None]:
    """``(keep, frame)``: window features of the players of ``rows`` known by the window's end (``keep``
    indexes ``rows.players``; ``frame`` is ``None`` when there are none). ``align_to``: the frame holds
    exactly those players, in that order, a player not known by the window's end getting zeros (what
    an outer join's nulls give)."""
    keep, out = window_feature_arrays(rows, window, holiday_country=s.holiday_country,
                                      custom_types=taxonomy.custom_types)
    if align_to is not None:
        if not np.array_equal(keep, align_to):
            at = np.full(rows.n_players, -1, dtype=np.int64)
            at[keep] = np.arange(keep.size)
            pick = at[align_to]
            missing = pick < 0
            out = {name: np.where(missing, 0.0, v[np.maximum(pick, 0)]) if v.size else np.zeros(align_to.size)
                   for name, v in out.items()}
        keep = align_to
    if not keep.size:
        return keep, None
    return keep, ArrayFrame([rows.players[i] for i in keep], out)


def score_player_rows(taxonomy: GameBehavioralTaxonomy, rows: DailyRows, as_of) -> ProfileScores:
    """:func:`score_profiles` for the players of ``rows`` built without Polars (the request path).

    The result equals ``score_profiles`` on the same rows; each player's scores do not depend on
    which other players ``rows`` holds. Raises :class:`PlayerNotFound` when no player is known by
    ``as_of``; see :func:`score_rows` for the players that are.
    """
    ps, _ = score_rows(taxonomy, rows, as_of)
    if ps is None:
        raise PlayerNotFound(f"unknown player(s): {', '.join(map(str, rows.players[:5]))}")
    return ps


def score_rows(taxonomy: GameBehavioralTaxonomy, rows: DailyRows, as_of) -> tuple[ProfileScores | None, np.ndarray]:
    """``(scores, keep)``: the players of ``rows`` known by ``as_of`` (``keep`` indexes ``rows.players``;
    ``scores`` is ``None`` when there are none), scored as :func:`score_player_rows` scores them."""
    s = _settings_of(taxonomy)
    as_of = resolve_as_of(as_of, s)
    keep, frame = _player_frame(taxonomy, rows, _windows(as_of, s)["profile"], s)
    return (None if frame is None else score_players(taxonomy, frame)), keep


def detect_player_rows(taxonomy: GameBehavioralTaxonomy, rows: DailyRows, as_of, *,
                       shifts: dict | None = None) -> DetectionResult:
    """:func:`run_detection` for the players of ``rows``, without Polars (the request path).

    Each player's detection does not depend on which other players ``rows`` holds. Raises
    :class:`PlayerNotFound` when no player is known by the current window's end; see
    :func:`detect_rows` for the players that are.
    """
    res, _ = detect_rows(taxonomy, rows, as_of, shifts=shifts)
    if res is None:
        raise PlayerNotFound(f"unknown player(s): {', '.join(map(str, rows.players[:5]))}")
    return res


def detect_rows(taxonomy: GameBehavioralTaxonomy, rows: DailyRows, as_of, *,
                shifts: dict | None = None) -> tuple[DetectionResult | None, np.ndarray]:
    """``(detections, keep)``: the players of ``rows`` known by the current window's end (``keep`` indexes
    ``rows.players``; ``detections`` is ``None`` when there are none). Game-wide shifts come from ``shifts``
    only (the table :meth:`detect_all` stores), never from the players of ``rows``: a request's answer
    does not depend on the requests it was batched with."""
    s = _settings_of(taxonomy)
    as_of = resolve_as_of(as_of, s)
    wins = _windows(as_of, s)
    keep, cur = _player_frame(taxonomy, rows, wins["current"], s)
    if cur is None:
        return None, keep
    _, typ = _player_frame(taxonomy, rows, wins["typical"], s, align_to=keep)
    return _detect_pair(taxonomy, WindowPair(cur, typ), wins, s, shifts, estimate_shifts=False), keep


def detections_frame(res: DetectionResult, *, detail: bool = False) -> pl.DataFrame:
    """One row per player (``detail=True``: one row per player × axis)."""
    base = {
        "player_id": res.player_ids, "is_anomalous": res.is_anomalous, "overall_score": res.overall_score,
        "surprise": res.surprise, "p_value": res.p_value, "confidence": res.confidence,
        "context": res.context, "insufficient_history": res.insufficient,
    }
    if not detail:
        frame = pl.DataFrame(base)
        n = len(res.player_ids)
        best_axis = np.full(n, None, dtype=object)
        best_dir = np.full(n, None, dtype=object)
        best = np.full(n, -1.0)
        for axis_id, d in res.axes.items():
            better = d["anomaly_score"] > best
            best = np.where(better, d["anomaly_score"], best)
            best_axis = np.where(better, axis_id, best_axis)
            best_dir = np.where(better, d["direction"], best_dir)
        return frame.with_columns(pl.Series("top_axis", best_axis, dtype=pl.Utf8),
                                  pl.Series("direction", best_dir, dtype=pl.Utf8))
    parts = []
    for axis_id, d in res.axes.items():
        parts.append(pl.DataFrame({
            "player_id": res.player_ids, "axis": axis_id,
            **{k: d[k] for k in ("current_distance", "typical_distance", "distance_delta", "deviation",
                                 "surprise", "p_value", "anomaly_score", "threshold", "is_anomalous")},
            "direction": pl.Series(d["direction"], dtype=pl.Utf8),
        }))
    return pl.concat(parts) if parts else pl.DataFrame()


def detect_anomalies(taxonomy: GameBehavioralTaxonomy, data, *, as_of=None, detail: bool = False,
                     player_ids=None) -> pl.DataFrame:
    """Per-player anomaly verdicts against each player's own normal."""
    daily = to_daily(data, taxonomy.settings.get("timezone", "UTC"))
    res = run_detection(taxonomy, daily, as_of, player_ids=player_ids)
    return detections_frame(res, detail=detail)


def categorize_player(taxonomy: GameBehavioralTaxonomy, data, player_id: str, *, as_of=None) -> dict:
    """One player's profile as a dict (the same vectorized kernel as ``categorize``)."""
    if not isinstance(player_id, str) or not player_id:
        raise InvalidInput("player_id must be a non-empty string", field="player_id")
    daily = to_daily(data, taxonomy.settings.get("timezone", "UTC"))
    ps = score_profiles(taxonomy, daily, as_of, player_ids=[player_id])
    return profile_dict(taxonomy, ps, 0)


def profile_dict(taxonomy: GameBehavioralTaxonomy, ps: ProfileScores, i: int) -> dict:
    """Row ``i`` of ProfileScores as the categorize answer of DESIGN §6 / the HTTP API issue.

    Reads row ``i`` only (each array row converted to floats once); the offsets are those of
    :func:`.score.primary_offsets`, element for element.
    """
    axes = {}
    x_row = ps.X[i].tolist()
    rows = {}
    for a in ps.axes:
        ks = a.scores
        prim = int(ks.primary[i])
        strength, typicality = ks.strength[i].tolist(), ks.typicality[i].tolist()
        rows[id(a)] = (strength, typicality)
        probability, distance = ks.probability[i].tolist(), np.sqrt(ks.dist_sq[i]).tolist()
        x_axis = [x_row[c] for c in a.cols.tolist()]
        mem = []
        for s, seg in enumerate(a.axis.segments):
            if s != prim and strength[s] < 0.01:
                continue
            cm = np.asarray(seg.center_metric, dtype=np.float64).tolist()
            mem.append({
                "segment_id": seg.segment_id, "segment_name": seg.segment_name,
                "membership_strength": strength[s],
                "membership_probability": probability[s],
                "typicality": typicality[s],
                "distance_from_center": distance[s],
                "position_offset": {m: x_axis[j] - cm[j] for j, m in enumerate(a.axis.metrics)},
            })
        seg = a.axis.segments[prim]
        z_row, center = a.Z[i].tolist(), a.axis.kernel.centers_[prim].tolist()
        axes[a.axis.axis_id] = {
            "primary_segment": seg.segment_name, "primary_segment_id": seg.segment_id,
            "confidence": float(a.confidence[i]), "beyond_extreme": bool(ks.beyond_extreme[i]),
            "position_offset_model": {m: z_row[j] - center[j] for j, m in enumerate(a.axis.metrics)},
            "memberships": mem,
        }
    for axis in taxonomy.axes:
        if axis.degenerate:
            seg = axis.segments[0]
            axes[axis.axis_id] = {"primary_segment": seg.segment_name, "primary_segment_id": seg.segment_id,
                                  "confidence": 0.0, "degenerate": True, "memberships": []}
    top = []
    for ai, s in zip(ps.top_axis[i].tolist(), ps.top_segment[i].tolist(), strict=True):
        if ai < 0:
            continue
        a = ps.axes[ai]
        strength, typicality = rows[id(a)]
        seg = a.axis.segments[s]
        top.append({"axis": a.axis.axis_id, "segment_name": seg.segment_name, "segment_id": seg.segment_id,
                    "membership_strength": strength[s], "typicality": typicality[s]})
    return {
        "player_id": ps.player_ids[i], "game_id": taxonomy.game_id, "taxonomy_version": taxonomy.taxonomy_version,
        "confidence": float(ps.confidence[i]), "inactive": bool(ps.inactive[i]),
        "exposure_days": float(ps.exposure_days[i]), "axes": axes, "top_segments": top,
        "variance_coverage": float(ps.variance_coverage[i]),
        "metrics": {m: x_row[j] for j, m in enumerate(taxonomy.scaler.metrics)},
    }


def detection_dict(taxonomy: GameBehavioralTaxonomy, res: DetectionResult, i: int) -> dict:
    """Row ``i`` of a DetectionResult as the detect answer."""
    axes = {}
    for axis in taxonomy.active_axes:
        d = res.axes[axis.axis_id]
        sig = res.signals[axis.axis_id]
        seg = axis.segments[int(d["segment"][i])]
        moved = {}
        for j, name in enumerate(sig.names):
            if sig.p[i, j] < 0.05:
                moved[name] = {"current": float(sig.current[i, j]), "typical": float(sig.typical[i, j]),
                               "baseline": float(sig.baseline[i, j]), "p_value": float(sig.p[i, j])}
        axes[axis.axis_id] = {
            "segment_name": seg.segment_name, "segment_id": seg.segment_id,
            **{k: float(d[k][i]) for k in ("current_distance", "typical_distance", "distance_delta",
                                           "deviation", "surprise", "p_value", "anomaly_score", "threshold")},
            "is_anomalous": bool(d["is_anomalous"][i] and not res.insufficient[i]),
            "critical": axis.critical, "direction": d["direction"][i] if d["surprise"][i] > 0 else None,
            "metrics": moved,
        }
    out = {
        "player_id": res.player_ids[i], "game_id": taxonomy.game_id,
        "taxonomy_version": taxonomy.taxonomy_version, "context": res.context,
        "is_anomalous": bool(res.is_anomalous[i]), "overall_score": float(res.overall_score[i]),
        "surprise": float(res.surprise[i]), "p_value": float(res.p_value[i]),
        "confidence": float(res.confidence[i]), "axes": axes,
    }
    if res.insufficient[i]:
        out["reason"] = "insufficient_history"
    return out


def detect_player_anomalies(taxonomy: GameBehavioralTaxonomy, data, player_id: str, *, as_of=None,
                            shifts: dict | None = None) -> dict:
    """One player's detection as a dict (same kernel as ``detect_anomalies``)."""
    daily = to_daily(data, taxonomy.settings.get("timezone", "UTC"))
    res = run_detection(taxonomy, daily, as_of, player_ids=[player_id], shifts=shifts or {})
    return detection_dict(taxonomy, res, 0)
