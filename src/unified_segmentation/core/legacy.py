"""The built-in legacy system: a faithful model of what studios typically run today.

Each player's baseline is their typical-window metrics; ``deviation = current − baseline`` is
z-scored per metric against the population; a player is anomalous when any |z| exceeds a threshold.
Its "segments" come from fixed studio-style rules on the baseline, written down here before any
unified result was seen (they are not fitted to anything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fixed studio-style cut-offs (chosen up front, never tuned on planted or unified results).
SPEND_28D_TIERS = ((0.0, "non_payer"), (5.0, "minnow"), (50.0, "dolphin"), (float("inf"), "whale"))
SESSIONS_PER_DAY_TIERS = ((1.0, "casual"), (3.0, "regular"), (float("inf"), "hardcore"))
SOCIAL_PER_SESSION_TIERS = ((0.3, "solo"), (2.0, "social"), (float("inf"), "guild"))
LEGACY_METRICS = (
    "spend_per_day", "purchases_per_day", "sessions_per_day", "avg_session_minutes",
    "weekend_play_share", "night_play_share", "social_events_per_session",
)
LEGACY_AXIS_OF = {
    "spend_per_day": "monetization", "purchases_per_day": "monetization",
    "sessions_per_day": "engagement", "avg_session_minutes": "engagement",
    "weekend_play_share": "temporal", "night_play_share": "temporal",
    "social_events_per_session": "social",
}
DEFAULT_Z_THRESHOLD = 3.0


def legacy_segments(baseline: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rule-based segment names per axis from baseline metrics (arrays of shape (n,))."""
    out: dict[str, np.ndarray] = {}
    if "spend_per_day" in baseline:
        spend28 = np.asarray(baseline["spend_per_day"], float) * 28.0
        names = np.where(spend28 <= 0.0, "non_payer", np.where(spend28 < 5.0, "minnow",
                         np.where(spend28 < 50.0, "dolphin", "whale")))
        out["monetization"] = names
    if "sessions_per_day" in baseline:
        s = np.asarray(baseline["sessions_per_day"], float)
        out["engagement"] = np.where(s < 1.0, "casual", np.where(s < 3.0, "regular", "hardcore"))
    if "night_play_share" in baseline and "weekend_play_share" in baseline:
        night = np.asarray(baseline["night_play_share"], float)
        weekend = np.asarray(baseline["weekend_play_share"], float)
        out["temporal"] = np.where(night > 0.5, "night_owl", np.where(weekend > 0.5, "weekend_warrior",
                                   "weekday_player"))
    if "social_events_per_session" in baseline:
        s = np.asarray(baseline["social_events_per_session"], float)
        out["social"] = np.where(s < 0.3, "solo", np.where(s < 2.0, "social", "guild"))
    return out


@dataclass
class LegacyBaselineModel:
    """Per-metric population scale of ``current − baseline`` (fitted on a null run, no labels)."""

    metrics: list[str]
    scale: np.ndarray  # (m,)
    threshold: float = DEFAULT_Z_THRESHOLD

    @classmethod
    def fit(cls, null_current: dict[str, np.ndarray], null_typical: dict[str, np.ndarray],
            threshold: float = DEFAULT_Z_THRESHOLD) -> LegacyBaselineModel:
        metrics = [m for m in LEGACY_METRICS if m in null_current and m in null_typical]
        scale = []
        for m in metrics:
            d = np.asarray(null_current[m], float) - np.asarray(null_typical[m], float)
            s = float(np.std(d))
            scale.append(s if s > 1e-12 else 1.0)
        return cls(metrics=metrics, scale=np.asarray(scale), threshold=threshold)

    def z_scores(self, current: dict[str, np.ndarray], baseline: dict[str, np.ndarray]) -> np.ndarray:
        """z of ``current − baseline`` per metric, ndarray of shape (n, m)."""
        cols = [(np.asarray(current[m], float) - np.asarray(baseline[m], float)) / s
                for m, s in zip(self.metrics, self.scale, strict=True)]
        return np.stack(cols, axis=1) if cols else np.zeros((0, 0))

    def score(self, current, baseline) -> np.ndarray:
        """max |z| per player (higher = more anomalous)."""
        z = self.z_scores(current, baseline)
        return np.abs(z).max(axis=1) if z.size else np.zeros(0)

    def axis_flags(self, current, baseline, threshold: float | None = None) -> dict[str, np.ndarray]:
        t = self.threshold if threshold is None else threshold
        z = np.abs(self.z_scores(current, baseline))
        out: dict[str, np.ndarray] = {}
        for j, m in enumerate(self.metrics):
            axis = LEGACY_AXIS_OF[m]
            flag = z[:, j] > t
            out[axis] = out[axis] | flag if axis in out else flag
        return out

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "scale": self.scale.tolist(), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict) -> LegacyBaselineModel:
        return cls(metrics=list(d["metrics"]), scale=np.asarray(d["scale"], float),
                   threshold=float(d["threshold"]))
