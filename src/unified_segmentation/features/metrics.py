"""Canonical metric names (DESIGN 4.1), grouped by axis, and which of them are heavy-tailed."""

from __future__ import annotations

from collections.abc import Iterable

PER_DAY_SUFFIX = "_per_day"

METRICS_BY_AXIS: dict[str, list[str]] = {
    "monetization": ["spend_per_day", "purchases_per_day", "avg_purchase_value", "has_purchase"],
    "engagement": ["sessions_per_day", "avg_session_minutes", "active_day_share"],
    "temporal": ["weekend_play_share", "night_play_share", "start_hour_sin", "start_hour_cos"],
    "social": ["social_events_per_session", "social_session_share"],
}

#: Metrics whose inputs a daily file may not provide (null column -> the metric is omitted).
OPTIONAL_METRIC_INPUTS: dict[str, str] = {
    "night_play_share": "night_playtime_minutes",
    "start_hour_sin": "start_hour_sin_sum",
    "start_hour_cos": "start_hour_cos_sum",
    "social_session_share": "social_sessions",
}


def custom_metric(event_type: str) -> str:
    """Metric name of a game-specific event type: ``<type>_per_day``."""
    return f"{event_type}{PER_DAY_SUFFIX}"


class _HeavyTailed(frozenset):
    """The canonical heavy-tailed metrics; membership also holds for every ``<type>_per_day`` rate."""

    def __contains__(self, name: object) -> bool:
        return frozenset.__contains__(self, name) or (isinstance(name, str) and name.endswith(PER_DAY_SUFFIX))


#: Metrics transformed with ``log1p`` before standardizing: every ``*_per_day`` rate (``in`` is true
#: for game-specific ``<type>_per_day`` names too), the average purchase value, the average session
#: length and social events per session.
HEAVY_TAILED: frozenset[str] = _HeavyTailed(
    {
        "spend_per_day",
        "purchases_per_day",
        "sessions_per_day",
        "avg_purchase_value",
        "avg_session_minutes",
        "social_events_per_session",
    }
)


def is_heavy_tailed(name: str) -> bool:
    """True when ``name`` is log1p-transformed (see :data:`HEAVY_TAILED`)."""
    return name in HEAVY_TAILED


def axis_of(metric: str) -> str:
    """Axis of a metric name; game-specific ``<type>_per_day`` metrics belong to ``"game_specific"``."""
    for axis, names in METRICS_BY_AXIS.items():
        if metric in names:
            return axis
    if metric.endswith(PER_DAY_SUFFIX):
        return "game_specific"
    raise KeyError(metric)


def canonical_metrics(custom_types: Iterable[str] = ()) -> list[str]:
    """All metric names in a stable order: the four axes, then ``<type>_per_day``."""
    names = [m for axis in METRICS_BY_AXIS.values() for m in axis]
    return names + [custom_metric(t) for t in custom_types]
