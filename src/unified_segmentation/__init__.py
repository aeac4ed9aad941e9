"""Unified Behavioral Segmentation: per-game behavioural taxonomies, fuzzy memberships,
per-player anomaly detection and a safe migration path from legacy systems.

The library API is pure (frames in, Polars frames out)::

    import unified_segmentation as us
    events = us.read_events("events.csv")
    taxonomy = us.calibrate(events, game_id="g", as_of="2026-03-02T12:00:00+00:00")
    profiles = us.categorize(taxonomy, events, as_of=...)
    anomalies = us.detect_anomalies(taxonomy, events, as_of=...)

Names are imported lazily so that ``import unified_segmentation.core`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GameBehavioralTaxonomy": "unified_segmentation.core.taxonomy",
    "GameSettings": "unified_segmentation.game_settings",
    "read_events": "unified_segmentation.ingest",
    "read_daily": "unified_segmentation.ingest",
    "read_outcomes": "unified_segmentation.ingest",
    "calibrate": "unified_segmentation.pipeline",
    "categorize": "unified_segmentation.pipeline",
    "detect_anomalies": "unified_segmentation.pipeline",
    "categorize_player": "unified_segmentation.pipeline",
    "detect_player_anomalies": "unified_segmentation.pipeline",
    "generate_game": "unified_segmentation.synth",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unified_segmentation' has no attribute {name!r}")
