"""Prometheus metrics of the service.

Counters and the latency histogram hold across workers: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``useg
serve`` sets it to a fresh directory for more than one worker) prometheus-client keeps every value in
memory-mapped files there and a scrape, whichever worker answers it, sums them. Per-game quality gauges
(variance explained, average confidence, active taxonomy version) are read from the database-backed
services at scrape time by a collector, so they need no multiprocess mode of their own.

Average confidence over time: ``rate(useg_profile_confidence_sum_total) / rate(useg_categorizations_total)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNMATCHED_ROUTE = "<unmatched>"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class SnapshotCollector(Collector):
    """Gauges computed at scrape time from ``services.metrics_snapshot()``."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        try:
            snap = self._snapshot() or {}
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            snap = {}
        per_game = {name: GaugeMetricFamily(f"useg_{name}", help_text, labels=["game_id"])
                    for name, help_text in GAME_GAUGES.items()}
        for game_id, g in sorted((snap.get("games") or {}).items()):
            for name, family in per_game.items():
                value = g.get(name)
                if isinstance(value, int | float):
                    family.add_metric([game_id], float(value))
        yield from per_game.values()
        counters = GaugeMetricFamily("useg_service_counter",
                                     "Counters kept by the services of the scraping process (adapter, persistence)",
                                     labels=["name"])
        for name, value in _flatten(snap.get("counters") or {}):
            counters.add_metric([name], value)
        yield counters
        adapter = GaugeMetricFamily("useg_adapter_router",
                                    "The adapter router's counters in the scraping process (served_by, fallbacks, "
                                    "shadow runs and mismatches)", labels=["name"])
        for name, value in _flatten(snap.get("adapter") or {}):
            adapter.add_metric([name], value)
        yield adapter


GAME_GAUGES = {
    "variance_explained": "Overall variance explained by the active taxonomy",
    "average_confidence": "Mean confidence of profiles served by this process since it started",
    "calibration_confidence_mean": "Mean confidence at calibration (alert when average_confidence falls 0.10 below)",
    "primary_segment_stability": "Share of players keeping their primary segment across recalibration",
    "taxonomy_version": "Taxonomy version in use",
}


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    """``{"served_by": {"unified": 3}, "fallbacks": 1}`` → ``("served_by_unified", 3.0), ("fallbacks", 1.0)``."""
    for key, value in sorted(d.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}_")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield name, float(value)


class ApiMetrics:
    """The service's metric objects, registered on a registry of their own (nothing global)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot_collector = SnapshotCollector(snapshot) if snapshot is not None else None
        r = self.registry
        self.request_duration = Histogram(
            "useg_http_request_duration_seconds", "HTTP request latency by route template, method and status",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.categorizations = Counter("useg_categorizations", "Player profiles computed", ["game_id"], registry=r)
        self.confidence_sum = Counter("useg_profile_confidence_sum",
                                      "Sum of the confidence of the profiles computed", ["game_id"], registry=r)
        self.detections = Counter("useg_anomaly_detections", "Anomaly detections computed", ["game_id"], registry=r)
        self.anomalies_flagged = Counter("useg_anomalies_flagged", "Detections with is_anomalous true",
                                         ["game_id"], registry=r)
        self.ingested_rows = Counter("useg_ingested_rows", "Rows accepted by ingestion", ["game_id", "kind"],
                                     registry=r)
        self.events_ingested = Counter("useg_events_ingested", "New events stored (duplicates excluded)",
                                       ["game_id"], registry=r)
        self.calibrations = Counter("useg_calibrations", "Calibrations finished", ["game_id", "outcome"], registry=r)
        self.request_batch_size = Histogram(
            "useg_request_batch_size", "Single categorize / detect calls read and scored together (api/batching.py)",
            ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self.profiles_served = Counter("useg_adapter_profiles", "Adapter profiles served",
                                       ["game_id", "served_by", "fallback"], registry=r)
        if multiprocess_dir() is None:
            from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)
            if self._snapshot_collector is not None:
                r.register(self._snapshot_collector)

    # ------------------------------------------------------------------ recording
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.request_duration.labels(route, method, str(status)).observe(seconds)

    def observe_batch(self, kind: str, calls: int) -> None:
        self.request_batch_size.labels(kind).observe(calls)

    def record_profiles(self, game_id: str, profiles: list[dict[str, Any]]) -> None:
        if not profiles:
            return
        self.categorizations.labels(game_id).inc(len(profiles))
        total = sum(float(p.get("confidence") or 0.0) for p in profiles)
        self.confidence_sum.labels(game_id).inc(total)

    def record_confidences(self, game_id: str, confidence: Any) -> None:
        """A columnar batch: its players' confidences (an array)."""
        if len(confidence) == 0:
            return
        self.categorizations.labels(game_id).inc(len(confidence))
        self.confidence_sum.labels(game_id).inc(float(sum(confidence)))

    def record_detections(self, game_id: str, detections: list[dict[str, Any]]) -> None:
        if not detections:
            return
        self.detections.labels(game_id).inc(len(detections))
        flagged = sum(1 for d in detections if d.get("is_anomalous"))
        if flagged:
            self.anomalies_flagged.labels(game_id).inc(flagged)

    def record_ingestion(self, game_id: str, kind: str, answer: dict[str, Any]) -> None:
        self.ingested_rows.labels(game_id, kind).inc(int(answer.get("accepted") or 0))
        if kind == "events":
            self.events_ingested.labels(game_id).inc(int(answer.get("inserted") or 0))

    def record_profile_served(self, game_id: str, answer: dict[str, Any]) -> None:
        self.profiles_served.labels(game_id, str(answer.get("served_by", "unknown")),
                                    "true" if answer.get("fallback") else "false").inc()

    # ------------------------------------------------------------------ exposition
    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (summed over workers in multiprocess mode)."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        if self._snapshot_collector is not None:
            registry.register(self._snapshot_collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST
