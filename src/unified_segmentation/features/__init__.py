"""Polars feature building: events -> canonical daily rows -> per-player window features."""

from unified_segmentation.features.daily import (
    DAILY_BASE_COLUMNS,
    events_to_daily,
    merge_daily,
    normalize_daily,
)
from unified_segmentation.features.metrics import (
    HEAVY_TAILED,
    METRICS_BY_AXIS,
    axis_of,
    canonical_metrics,
    custom_metric,
    is_heavy_tailed,
)
from unified_segmentation.features.windows import (
    CONTEXTS,
    DailyRows,
    Window,
    context_day_weights,
    daily_rows,
    holiday_dates,
    select_custom_types,
    window_context,
    window_feature_arrays,
    window_features,
    windows_for,
)

__all__ = [
    "CONTEXTS",
    "DAILY_BASE_COLUMNS",
    "DailyRows",
    "HEAVY_TAILED",
    "METRICS_BY_AXIS",
    "Window",
    "axis_of",
    "canonical_metrics",
    "context_day_weights",
    "custom_metric",
    "daily_rows",
    "events_to_daily",
    "holiday_dates",
    "is_heavy_tailed",
    "merge_daily",
    "normalize_daily",
    "select_custom_types",
    "window_context",
    "window_feature_arrays",
    "window_features",
    "windows_for",
]
