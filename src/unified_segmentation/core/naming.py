"""Readable, deterministic, unique segment names derived from segment centers (metric units)."""

from __future__ import annotations

import math

_LADDERS = {
    "monetization": {
        1: ["spender"],
        2: ["minnow", "whale"],
        3: ["minnow", "dolphin", "whale"],
        4: ["minnow", "dolphin", "whale", "super_whale"],
    },
    "engagement": {
        1: ["regular"],
        2: ["casual", "hardcore"],
        3: ["casual", "regular", "hardcore"],
        4: ["casual", "regular", "core", "hardcore"],
        5: ["dormant", "casual", "regular", "core", "hardcore"],
    },
    "social": {
        1: ["social"],
        2: ["solo", "social"],
        3: ["solo", "social", "guild_core"],
        4: ["solo", "light_social", "social", "guild_core"],
    },
}


def _ladder(axis: str, k: int) -> list[str]:
    table = _LADDERS[axis]
    if k in table:
        return list(table[k])
    base = table[max(table)]
    return [base[min(i * len(base) // k, len(base) - 1)] for i in range(k)]


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def order_key(axis: str, center: dict[str, float]) -> float:
    """Scalar used to order segments of an ordered axis (lowest first)."""
    if axis == "monetization":
        return center.get("spend_per_day", 0.0) + 1e-3 * center.get("purchases_per_day", 0.0)
    if axis == "engagement":
        return center.get("sessions_per_day", 0.0) * max(center.get("avg_session_minutes", 1.0), 1e-3) + (
            center.get("active_day_share", 0.0)
        )
    if axis == "social":
        return center.get("social_events_per_session", 0.0) + center.get("social_session_share", 0.0)
    return 0.0


def name_segments(axis: str, centers: list[dict[str, float]]) -> tuple[list[str], list[int] | None]:
    """Names for the segments of one axis and, for ordered axes, their order (lowest first).

    Parameters
    ----------
    axis : str
        ``monetization``, ``engagement``, ``temporal``, ``social`` or a game-specific axis name.
    centers : list of dict
        Each segment's center in metric units.
    """
    k = len(centers)
    if axis in ("monetization", "engagement", "social"):
        order = sorted(range(k), key=lambda s: order_key(axis, centers[s]))
        names = [""] * k
        rest = order
        if axis == "monetization":
            lowest = centers[order[0]]
            if lowest.get("spend_per_day", 0.0) < 1e-3 or lowest.get("has_purchase", 1.0) < 0.05:
                names[order[0]] = "non_payer"
                rest = order[1:]
            elif k > 1:
                names[order[0]] = "free_to_play"
                rest = order[1:]
        ladder = _ladder(axis, len(rest)) if rest else []
        for s, nm in zip(rest, ladder, strict=True):
            names[s] = nm
        return _unique(names), order
    if axis == "temporal":
        return _unique([_temporal_name(c) for c in centers]), None
    return _unique([_specific_name(c) for c in centers]), None


def _temporal_name(c: dict[str, float]) -> str:
    weekend = c.get("weekend_play_share", 0.0)
    night = c.get("night_play_share", 0.0)
    if night >= 0.5:
        return "night_owl"
    if weekend >= 0.5:
        return "weekend_warrior"
    sin, cos = c.get("start_hour_sin"), c.get("start_hour_cos")
    if sin is None or cos is None or (abs(sin) < 1e-9 and abs(cos) < 1e-9):
        return "weekday_player"
    hour = (math.degrees(math.atan2(sin, cos)) / 15.0) % 24.0
    if 5 <= hour < 12:
        return "morning_player"
    if 12 <= hour < 17:
        return "afternoon_player"
    if 17 <= hour < 22:
        return "evening_player"
    return "night_owl"


def _specific_name(c: dict[str, float]) -> str:
    """Game-specific: named after the metric the segment is most above the axis average on.

    ``c`` holds the segment's standardized center under keys ``z:<metric>``.
    """
    zs = {k[2:]: v for k, v in c.items() if k.startswith("z:")}
    if not zs:
        return "segment"
    metric, z = max(zs.items(), key=lambda kv: kv[1])
    stem = metric.removesuffix("_per_day")
    if z < 0:
        return "low_activity"
    return f"{stem}_focused"
