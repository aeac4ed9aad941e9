"""Small hand-written data for the storage tests."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
import pytest
from sqlalchemy.orm import Session

from unified_segmentation.storage import repositories as repo

GAME = "g_storage"
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def game(db_session: Session) -> str:
    repo.ensure_game(db_session, GAME, {"timezone": "UTC", "profile_days": 28})
    return GAME


def make_events(rows: list[tuple[str, str, str, dt.datetime, float | None]]) -> pl.DataFrame:
    """``(event_id, player_id, event_type, timestamp, value)`` rows as a canonical Events frame."""
    return pl.DataFrame(
        {
            "event_id": [r[0] for r in rows],
            "player_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "timestamp": [r[3] for r in rows],
            "value": [r[4] for r in rows],
            "properties": [None] * len(rows),
        },
        schema={
            "event_id": pl.String,
            "player_id": pl.String,
            "event_type": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "value": pl.Float64,
            "properties": pl.String,
        },
    )


def simple_rollup(events: pl.DataFrame) -> pl.DataFrame:
    """A minimal events -> Daily roll-up (the real one lives in ``features.daily``)."""
    is_type = lambda t: pl.col("event_type") == t  # noqa: E731
    return (
        events.group_by("player_id", pl.col("timestamp").dt.date().alias("date"))
        .agg(
            sessions=is_type("session").sum().cast(pl.Float64),
            playtime_minutes=(pl.col("value").filter(is_type("session")).sum() / 60.0),
            purchases=is_type("purchase").sum().cast(pl.Float64),
            spend=pl.col("value").filter(is_type("purchase")).sum(),
            social_events=is_type("social").sum().cast(pl.Float64),
            ev_quest=is_type("quest").sum().cast(pl.Float64),
        )
        .sort("player_id", "date")
    )


def _segment(segment_id: int, name: str, center: float, metrics: list[str]) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "segment_name": name,
        "center_position": {m: center + i * 0.1 for i, m in enumerate(metrics)},
        "standard_deviations": {m: 0.5 + i for i, m in enumerate(metrics)},
        "covariance_matrix": {
            "metrics": metrics,
            "matrix": [[0.25 if i == j else 0.01 for j in range(len(metrics))] for i in range(len(metrics))],
        },
        "contextual_centers": {
            "weekday": {m: center for m in metrics},
            "weekend": {m: center * 1.5 for m in metrics},
            "holiday": None,
        },
        "population_percentage": 100.0 / 3,
        "ltv_mean": 12.345678901234567,
        "churn_rate": 0.1,
        "support_tickets_per_player": None,
        "ltv_correlation": 0.42,
        "churn_correlation": -0.2,
        "support_risk_correlation": None,
    }


@pytest.fixture
def taxonomy_dict() -> Callable[..., dict[str, Any]]:
    """``taxonomy_dict(shift=0.0)``: a small DESIGN §6 taxonomy (2 universal axes, 1 game-specific)."""

    def build(shift: float = 0.0) -> dict[str, Any]:
        money = ["spend_per_day", "purchases_per_day"]
        engage = ["sessions_per_day", "avg_session_minutes", "active_day_share"]
        quest = ["quest_per_day"]
        taxonomy = {
            "game_id": GAME,
            "taxonomy_version": None,
            "as_of": "2024-03-01T12:00:00+00:00",
            "last_calibrated": "2024-03-01T12:05:00+00:00",
            "total_axes_count": 3,
            "total_segments_count": 6,
            "variance_explained": 0.8123456789012345 + shift,
            "quality": {"flagged": False, "reasons": []},
            "universal_axes": [
                {
                    "axis_id": "monetization",
                    "axis_name": "monetization",
                    "axis_type": "universal",
                    "defining_metrics": money,
                    "segment_count": 2,
                    "variance_explained": 0.91,
                    "variance_explained_null": 0.62,
                    "degenerate": False,
                    "segments": [
                        _segment(1, "non_payer", 0.0 + shift, money),
                        _segment(2, "whale", 3.0, money),
                    ],
                },
                {
                    "axis_id": "engagement",
                    "axis_name": "engagement",
                    "axis_type": "universal",
                    "defining_metrics": engage,
                    "segment_count": 2,
                    "variance_explained": 0.75,
                    "variance_explained_null": 0.5,
                    "degenerate": False,
                    "segments": [_segment(3, "casual", -1.0, engage), _segment(4, "hardcore", 1.0, engage)],
                },
            ],
            "game_specific_axes": [
                {
                    "axis_id": "gs_quest",
                    "axis_name": "quest_per_day",
                    "axis_type": "game_specific",
                    "defining_metrics": quest,
                    "segment_count": 2,
                    "variance_explained": 0.7,
                    "variance_explained_null": None,
                    "degenerate": False,
                    "segments": [_segment(5, "quest_low", 0.0, quest), _segment(6, "quest_high", 2.0, quest)],
                }
            ],
            "model": {
                "transforms": {"spend_per_day": "log1p", "sessions_per_day": None},
                "scalers": {"spend_per_day": {"mean": 0.1234567890123, "scale": 1e-300}},
                "thresholds": {"monetization": 2.5, "engagement": 3.25},
                "rule": {"min_share": 0.003, "min_players": 20, "silhouette": 0.2},
                "settings": {"min_k": 2, "max_k": 8, "timezone": "UTC"},
                "big_int": 2**53 + 1,
                "unicode": "café ☕",
            },
        }
        return copy.deepcopy(taxonomy)

    return build


def run_together(work: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``work(item)`` for every item, each on its own thread, all released at once by a barrier (so the
    transactions really overlap); the results in completion order. Fails with the errors if any."""
    barrier = threading.Barrier(len(items))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(item: Any) -> None:
        try:
            barrier.wait()
            results.append(work(item))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results
