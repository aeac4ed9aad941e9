"""Queries the services need beyond the core repositories: game deletion, counts, primary segments,
version metadata, event-derived daily rows, API-key lookup by prefix, rate-limit counters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from .. import _bulk
from ..models import ApiKey, DailyActivity, Game, Player, TaxonomyVersion
from .events import ingest_lock

__all__ = [
    "count_players",
    "delete_event_daily",
    "delete_game",
    "get_api_key_info",
    "primary_segments",
    "rate_limit_increment",
    "version_info",
]


def delete_game(session: Session, game_id: str) -> bool:
    """Delete a game and everything stored for it (cascades); True when it existed."""
    game = session.get(Game, game_id)
    if game is None:
        return False
    session.flush()
    for table in (
        "player_segment_memberships",
        "player_typical_offsets",
        "anomaly_detections",
        "segment_definitions",
        "behavioral_axes",
        "game_behavioral_taxonomy",
        "taxonomy_versions",
        "daily_activity",
        "players",
        "outcomes",
        "raw_events",
        "event_keys",
        "rollout_audit",
        "rollout_configs",
        "shadow_comparisons",
        "validation_reports",
        "calibration_jobs",
        "idempotency_keys",
    ):
        session.execute(text(f"DELETE FROM {table} WHERE game_id = :g"), {"g": game_id})
    session.execute(delete(Game).where(Game.game_id == game_id))
    return True


def count_players(session: Session, game_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Player).where(Player.game_id == game_id)) or 0)


def delete_event_daily(session: Session, game_id: str) -> int:
    """Delete the daily rows rolled up from events (before re-deriving them in a new time zone)."""
    session.flush()
    ingest_lock(session, game_id)
    res = session.execute(
        delete(DailyActivity).where(DailyActivity.game_id == game_id, DailyActivity.source == "events")
    )
    return int(res.rowcount or 0)


def version_info(session: Session, game_id: str, version: int) -> dict[str, Any] | None:
    row = session.get(TaxonomyVersion, (game_id, version))
    if row is None:
        return None
    return {"version": row.version, "as_of": row.as_of, "created_at": row.created_at, "status": row.status}


def primary_segments(session: Session, game_id: str, version: int) -> pl.DataFrame:
    """``player_id, axis, segment_id, segment_name, membership_probability, confidence`` of stored primaries."""
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    query = (
        "SELECT m.player_id, m.axis, m.segment_id, s.segment_name, m.membership_probability, m.confidence "
        "FROM player_segment_memberships m JOIN segment_definitions s ON s.game_id = m.game_id "
        "AND s.taxonomy_version = m.taxonomy_version AND s.segment_id = m.segment_id "
        f"WHERE m.game_id = {p} AND m.taxonomy_version = {p} "
        f"AND m.is_primary = {'TRUE' if kind == 'postgresql' else 1} "
        "ORDER BY m.player_id, m.axis"
    )
    schema = {
        "player_id": pl.String(),
        "axis": pl.String(),
        "segment_id": pl.Int64(),
        "segment_name": pl.String(),
        "membership_probability": pl.Float64(),
        "confidence": pl.Float64(),
    }
    return _bulk.read_query(session, query, [game_id, version], schema)


def get_api_key_info(session: Session, key_prefix: str) -> dict[str, Any] | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_prefix == key_prefix))
    if key is None:
        return None
    return {
        "id": key.id,
        "scope": key.scope,
        "games": key.games,
        "key_hash": key.key_hash,
        "revoked_at": key.revoked_at,
        "name": key.name,
        "key_prefix": key.key_prefix,
    }


def rate_limit_increment(session: Session, key_id: int, window: int) -> int:
    """Count one request of an API key in a one-minute window (shared by every worker); returns the count."""
    kind = _bulk.dialect(session)
    now = dt.datetime.now(dt.UTC)
    session.execute(text("DELETE FROM rate_limit_counters WHERE window_start < :w"), {"w": window - 2})
    if kind == "postgresql":
        sql = (
            "INSERT INTO rate_limit_counters (key_id, window_start, hits, updated_at) VALUES (:k, :w, 1, :t) "
            "ON CONFLICT (key_id, window_start) DO UPDATE SET hits = rate_limit_counters.hits + 1, "
            "updated_at = :t RETURNING hits"
        )
    else:
        sql = (
            "INSERT INTO rate_limit_counters (key_id, window_start, hits, updated_at) VALUES (:k, :w, 1, :t) "
            "ON CONFLICT (key_id, window_start) DO UPDATE SET hits = hits + 1, updated_at = :t RETURNING hits"
        )
    return int(session.execute(text(sql), {"k": key_id, "w": window, "t": now}).scalar_one())
