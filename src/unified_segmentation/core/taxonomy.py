"""The calibrated model of one game: axes, segments, transforms, thresholds.

``GameBehavioralTaxonomy.to_dict()`` is the taxonomy JSON of DESIGN §6 and is complete enough to
score without the database; ``from_dict`` restores it losslessly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kernel import AxisKernel
from .transform import MetricScaler

CONTEXTS = ("weekday", "weekend", "holiday")
CRITICAL_AXES = ("monetization", "engagement")


def _vec(d: dict[str, float] | None, metrics: list[str]) -> np.ndarray | None:
    if d is None:
        return None
    return np.array([float(d[m]) for m in metrics])


def _named(v: np.ndarray | None, metrics: list[str]) -> dict[str, float] | None:
    if v is None:
        return None
    return {m: float(x) for m, x in zip(metrics, v, strict=True)}


@dataclass
class SegmentModel:
    """One segment of one axis. Vectors are in model space unless named ``*_metric``."""

    segment_id: int
    segment_name: str
    center: np.ndarray  # (p,)
    covariance: np.ndarray  # (p, p)
    center_metric: np.ndarray  # (p,) inverse_transform(center)
    std_metric: np.ndarray  # (p,) members' standard deviation in metric units
    weight: float  # K-means share used as prior
    population_percentage: float = 0.0
    contextual_centers: dict[str, np.ndarray | None] = field(default_factory=dict)
    outcomes: dict[str, float | None] = field(default_factory=dict)
    anomaly: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, metrics: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "segment_id": int(self.segment_id),
            "segment_name": self.segment_name,
            "center_position": _named(self.center_metric, metrics),
            "standard_deviations": _named(self.std_metric, metrics),
            "covariance_matrix": {"metrics": list(metrics), "space": "model",
                                  "matrix": self.covariance.tolist()},
            "contextual_centers": {
                c: _named(self.contextual_centers.get(c), metrics) for c in CONTEXTS
            },
            "population_percentage": float(self.population_percentage),
            "ltv_mean": self.outcomes.get("ltv_mean"),
            "churn_rate": self.outcomes.get("churn_rate"),
            "support_tickets_per_player": self.outcomes.get("support_tickets_per_player"),
            "ltv_correlation": self.outcomes.get("ltv_correlation"),
            "churn_correlation": self.outcomes.get("churn_correlation"),
            "support_risk_correlation": self.outcomes.get("support_risk_correlation"),
            "outcome_lift": {k: v for k, v in self.outcomes.items() if k.endswith("_lift")},
            "model": {
                "center": self.center.tolist(),
                "weight": float(self.weight),
                "contextual_centers": {
                    c: (None if v is None else v.tolist()) for c, v in self.contextual_centers.items()
                },
                "anomaly": self.anomaly,
            },
        }
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentModel:
        metrics = d["covariance_matrix"]["metrics"]
        model = d["model"]
        outcomes = {
            k: d.get(k)
            for k in ("ltv_mean", "churn_rate", "support_tickets_per_player", "ltv_correlation",
                      "churn_correlation", "support_risk_correlation")
        }
        outcomes.update(d.get("outcome_lift") or {})
        return cls(
            segment_id=int(d["segment_id"]),
            segment_name=d["segment_name"],
            center=np.asarray(model["center"], dtype=np.float64),
            covariance=np.asarray(d["covariance_matrix"]["matrix"], dtype=np.float64),
            center_metric=_vec(d["center_position"], metrics),
            std_metric=_vec(d["standard_deviations"], metrics),
            weight=float(model["weight"]),
            population_percentage=float(d["population_percentage"]),
            contextual_centers={
                c: (None if v is None else np.asarray(v, dtype=np.float64))
                for c, v in model["contextual_centers"].items()
            },
            outcomes=outcomes,
            anomaly=model.get("anomaly") or {},
        )


@dataclass
class AxisModel:
    """One behavioural axis and its segments."""

    axis_id: str
    axis_name: str
    axis_type: str  # "universal" | "game_specific"
    metrics: list[str]
    segments: list[SegmentModel]
    degenerate: bool = False
    degenerate_reason: str | None = None
    dropped_metrics: list[str] = field(default_factory=list)
    weak_structure: bool = False
    order: list[int] | None = None
    variance_explained: float = 0.0
    variance_explained_null: float = 0.0
    variance_share: float = 0.0  # v_a
    anomaly_threshold: float | None = None
    selection: dict[str, Any] = field(default_factory=dict)  # inertias, knee, silhouette, notes
    quality: dict[str, Any] = field(default_factory=lambda: {"flagged": False, "reasons": []})
    _kernel: AxisKernel | None = field(default=None, repr=False, compare=False)

    @property
    def critical(self) -> bool:
        return self.axis_id in CRITICAL_AXES

    @property
    def kernel(self) -> AxisKernel:
        """The compiled scoring kernel (built once, cached)."""
        if self.degenerate:
            raise ValueError(f"axis {self.axis_id} is degenerate and has no kernel")
        if self._kernel is None:
            self._kernel = AxisKernel(
                np.stack([s.center for s in self.segments]),
                np.stack([s.covariance for s in self.segments]),
                np.array([s.weight for s in self.segments]),
                order=self.order,
            )
        return self._kernel

    def segment_index(self, segment_id: int) -> int:
        for i, s in enumerate(self.segments):
            if s.segment_id == segment_id:
                return i
        raise KeyError(segment_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis_id": self.axis_id,
            "axis_name": self.axis_name,
            "axis_type": self.axis_type,
            "defining_metrics": list(self.metrics),
            "segment_count": len(self.segments),
            "variance_explained": float(self.variance_explained),
            "variance_explained_null": float(self.variance_explained_null),
            "variance_share": float(self.variance_share),
            "degenerate": bool(self.degenerate),
            "degenerate_reason": self.degenerate_reason,
            "dropped_metrics": list(self.dropped_metrics),
            "weak_structure": bool(self.weak_structure),
            "critical": self.critical,
            "order": None if self.order is None else [int(i) for i in self.order],
            "anomaly_threshold": self.anomaly_threshold,
            "selection": self.selection,
            "quality": self.quality,
            "segments": [s.to_dict(self.metrics) for s in self.segments],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AxisModel:
        return cls(
            axis_id=d["axis_id"],
            axis_name=d["axis_name"],
            axis_type=d["axis_type"],
            metrics=list(d["defining_metrics"]),
            segments=[SegmentModel.from_dict(s) for s in d["segments"]],
            degenerate=bool(d["degenerate"]),
            degenerate_reason=d.get("degenerate_reason"),
            dropped_metrics=list(d.get("dropped_metrics") or []),
            weak_structure=bool(d.get("weak_structure")),
            order=d.get("order"),
            variance_explained=float(d["variance_explained"]),
            variance_explained_null=float(d["variance_explained_null"]),
            variance_share=float(d.get("variance_share", 0.0)),
            anomaly_threshold=d.get("anomaly_threshold"),
            selection=d.get("selection") or {},
            quality=d.get("quality") or {"flagged": False, "reasons": []},
        )


@dataclass
class GameBehavioralTaxonomy:
    """A game's calibrated taxonomy (one version)."""

    game_id: str
    as_of: str  # ISO-8601
    last_calibrated: str  # ISO-8601
    scaler: MetricScaler
    axes: list[AxisModel]
    settings: dict[str, Any]
    rules: dict[str, Any]
    taxonomy_version: int | None = None
    pca_explained_variance_ratio: list[float] = field(default_factory=list)
    unavailable_metrics: list[str] = field(default_factory=list)
    custom_types: list[str] = field(default_factory=list)
    n_calibration_players: int = 0
    anomaly: dict[str, Any] = field(default_factory=dict)
    calibration_stats: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- derived
    @property
    def active_axes(self) -> list[AxisModel]:
        return [a for a in self.axes if not a.degenerate]

    @property
    def universal_axes(self) -> list[AxisModel]:
        return [a for a in self.axes if a.axis_type == "universal"]

    @property
    def game_specific_axes(self) -> list[AxisModel]:
        return [a for a in self.axes if a.axis_type == "game_specific"]

    @property
    def variance_explained(self) -> float:
        active = self.active_axes
        total = sum(len(a.metrics) for a in active)
        if not total:
            return 0.0
        return float(sum(a.variance_explained * len(a.metrics) for a in active) / total)

    @property
    def quality(self) -> dict[str, Any]:
        reasons = []
        for a in self.axes:
            if a.degenerate:
                continue
            reasons += [f"{a.axis_id}: {r}" for r in a.quality.get("reasons", [])]
        if self.active_axes and self.variance_explained < 0.70:
            reasons.append(f"overall variance explained {self.variance_explained:.2f} < 0.70")
        return {"flagged": bool(reasons), "reasons": reasons}

    def axis(self, axis_id: str) -> AxisModel:
        for a in self.axes:
            if a.axis_id == axis_id:
                return a
        raise KeyError(axis_id)

    def metric_index(self, metrics: list[str]) -> np.ndarray:
        pos = {m: i for i, m in enumerate(self.scaler.metrics)}
        return np.array([pos[m] for m in metrics], dtype=np.int64)

    # ----------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "game_id": self.game_id,
            "taxonomy_version": self.taxonomy_version,
            "as_of": self.as_of,
            "last_calibrated": self.last_calibrated,
            "total_axes_count": len(self.axes),
            "total_segments_count": sum(len(a.segments) for a in self.axes),
            "variance_explained": self.variance_explained,
            "quality": self.quality,
            "universal_axes": [a.to_dict() for a in self.universal_axes],
            "game_specific_axes": [a.to_dict() for a in self.game_specific_axes],
            "pca_explained_variance_ratio": list(self.pca_explained_variance_ratio),
            "unavailable_metrics": list(self.unavailable_metrics),
            "n_calibration_players": int(self.n_calibration_players),
            "model": {
                "transforms": self.scaler.to_dict(),
                "rule_constants": self.rules,
                "settings": self.settings,
                "custom_types": list(self.custom_types),
                "anomaly": self.anomaly,
                "thresholds": {a.axis_id: a.anomaly_threshold for a in self.axes},
                "calibration_stats": self.calibration_stats,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GameBehavioralTaxonomy:
        model = d["model"]
        axes = [AxisModel.from_dict(a) for a in d["universal_axes"] + d["game_specific_axes"]]
        return cls(
            game_id=d["game_id"],
            as_of=d["as_of"],
            last_calibrated=d["last_calibrated"],
            scaler=MetricScaler.from_dict(model["transforms"]),
            axes=axes,
            settings=model["settings"],
            rules=model["rule_constants"],
            taxonomy_version=d.get("taxonomy_version"),
            pca_explained_variance_ratio=list(d.get("pca_explained_variance_ratio") or []),
            unavailable_metrics=list(d.get("unavailable_metrics") or []),
            custom_types=list(model.get("custom_types") or []),
            n_calibration_players=int(d.get("n_calibration_players") or 0),
            anomaly=model.get("anomaly") or {},
            calibration_stats=model.get("calibration_stats") or {},
        )
