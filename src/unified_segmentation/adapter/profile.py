"""The backward-compatible profile both the legacy systems and the unified system answer in (DESIGN §4.5).

``CompatProfile`` validates strictly: strings must be strings, numbers numbers, booleans booleans, scores and
confidence in [0, 1], no NaN / infinity. A garbage answer from a studio's HTTP legacy therefore fails with a
clear ``ValidationError`` (the HTTP legacy turns it into ``LegacyInvalidResponse``). Only ``timestamp`` is
lax: it accepts a ``datetime`` or an ISO-8601 string (naive values are read as UTC).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

NonEmptyStr = Annotated[str, StringConstraints(min_length=1, max_length=512)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"timestamp is not ISO-8601: {value[:40]!r}") from exc
    else:
        raise ValueError(f"timestamp must be an ISO-8601 string or datetime, got {type(value).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


Timestamp = Annotated[datetime, BeforeValidator(_parse_timestamp), Field(strict=False)]


class AnomalyFlags(BaseModel):
    """``{"is_anomalous": bool, "axes": {axis: bool}}``."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    is_anomalous: bool
    axes: dict[NonEmptyStr, bool] = Field(default_factory=dict)


class CompatProfile(BaseModel):
    """The backward-compatible profile: what ``POST /api/v1/segmentation/profile`` answers."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    player_id: NonEmptyStr
    primary_segments: dict[NonEmptyStr, NonEmptyStr]
    segment_scores: dict[NonEmptyStr, dict[NonEmptyStr, UnitFloat]]
    behavioral_baseline: dict[NonEmptyStr, FiniteFloat]
    confidence: UnitFloat
    timestamp: Timestamp
    anomalies: AnomalyFlags | None = None
    served_by: Literal["unified", "legacy"]
    fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (timestamp as ISO-8601)."""
        return self.model_dump(mode="json")

    def served(self, served_by: Literal["unified", "legacy"], fallback: bool = False) -> CompatProfile:
        """A copy stamped with who served it and whether it was a fallback."""
        return self.model_copy(update={"served_by": served_by, "fallback": fallback})


def _unit(x: Any) -> float:
    v = float(x)
    if math.isnan(v):
        return v  # rejected by validation with a clear message
    return min(1.0, max(0.0, v))


def unified_to_compat(profile_dict: dict, detection_dict: dict | None = None,
                      baseline: dict[str, float] | None = None, *,
                      timestamp: datetime | None = None) -> CompatProfile:
    """Convert the unified categorize answer (and optionally its detect answer) to a ``CompatProfile``.

    ``profile_dict``: ``{"player_id", "confidence", "axes": {axis: {"primary_segment", "memberships":
    [{"segment_name", "membership_probability", ...}]}}}``; ``segment_scores`` are the membership
    probabilities (a degenerate axis without memberships scores its single segment 1.0).
    ``detection_dict``: ``{"is_anomalous", "axes": {axis: {"is_anomalous", ...}}}`` or ``None``.
    ``baseline``: the player's typical metrics in metric units (``{}`` when ``None``).
    """
    primary: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    for axis, a in (profile_dict.get("axes") or {}).items():
        name = a.get("primary_segment")
        if name is None:
            continue
        primary[axis] = name
        mem = a.get("memberships") or []
        if mem:
            scores[axis] = {m["segment_name"]: _unit(m["membership_probability"]) for m in mem}
        else:
            scores[axis] = {name: 1.0}
    anomalies = None
    if detection_dict is not None:
        anomalies = {
            "is_anomalous": bool(detection_dict.get("is_anomalous", False)),
            "axes": {ax: bool(d.get("is_anomalous", False)) for ax, d in (detection_dict.get("axes") or {}).items()},
        }
    return CompatProfile.model_validate({
        "player_id": profile_dict["player_id"],
        "primary_segments": primary,
        "segment_scores": scores,
        "behavioral_baseline": {k: float(v) for k, v in (baseline or {}).items()},
        "confidence": _unit(profile_dict.get("confidence", 0.0)),
        "timestamp": timestamp or datetime.now(UTC),
        "anomalies": anomalies,
        "served_by": "unified",
        "fallback": False,
    })
